"""SQLite's one connection per process is handed out in turns: a text's record (Twilio
waits for it) goes before the transactions already waiting, the others keep their order,
and a transaction that gives up waiting does not take the connection with it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from backend.core.database import (
    TurnTakingPool,
    create_engine,
    create_session_factory,
    first_in_line,
)


async def test_a_record_twilio_waits_for_goes_before_transactions_already_waiting(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    sessions = create_session_factory(engine)
    served: list[str] = []
    release = asyncio.Event()

    async def transaction(name: str) -> None:
        async with sessions.begin() as session:
            await session.execute(text("SELECT 1"))
            served.append(name)

    async def record(name: str) -> None:
        with first_in_line():
            await transaction(name)

    try:
        held = await _holding_the_connection(sessions, release)
        waiting = []
        for name in ("turn-1", "turn-2", "turn-3"):
            waiting.append(asyncio.create_task(transaction(name)))
            await asyncio.sleep(0.02)  # each is in line before the next arrives
        waiting.append(asyncio.create_task(record("text")))
        await asyncio.sleep(0.02)
        release.set()
        await asyncio.gather(held, *waiting)
        assert served == ["text", "turn-1", "turn-2", "turn-3"]
    finally:
        await engine.dispose()


async def test_a_transaction_that_gives_up_waiting_leaves_the_connection_to_the_others(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}",
        poolclass=TurnTakingPool, pool_size=1, max_overflow=0, pool_timeout=0.2,
    )  # fmt: skip
    sessions = create_session_factory(engine)
    release = asyncio.Event()

    try:
        held = await _holding_the_connection(sessions, release)
        with pytest.raises(exc.TimeoutError):
            async with sessions.begin() as session:
                await session.execute(text("SELECT 1"))
        # One that is cancelled while it waits (a client hung up) gives up its place too.
        cancelled = asyncio.create_task(_select(sessions))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        release.set()
        await held
        assert await _select(sessions) == 1
        assert engine.pool.status().endswith("Current Checked out connections: 0")
    finally:
        await engine.dispose()


async def _holding_the_connection(
    sessions: async_sessionmaker[AsyncSession], release: asyncio.Event
) -> asyncio.Task[None]:
    """A transaction that holds the connection until `release` is set."""
    holding = asyncio.Event()

    async def hold() -> None:
        async with sessions.begin() as session:
            await session.execute(text("SELECT 1"))
            holding.set()
            await release.wait()

    task = asyncio.create_task(hold())
    await holding.wait()
    return task


async def _select(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions.begin() as session:
        return int(await session.scalar(text("SELECT 1")) or 0)
