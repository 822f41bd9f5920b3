"""Pacing a sending number: each number sends at most `per_second` texts a second, the
turns handed out in order, so a burst queues in the backend instead of at Twilio."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.core.clock import Clock
from backend.core.models import SenderPace
from backend.messaging.door import Refusal, SendRefused

Sleep = Callable[[float], Awaitable[None]]

# Texts whose turns fall within one tick of each other leave together, at the tick's
# start: timers and sends are bunched, and the average pace stays exact (a text goes at
# most one tick early; Twilio queues what comes faster than a number sends).
TICK = 0.05


@dataclass
class SendingPace:
    """Each sending number's turn to send, `per_second` times a second at most, kept in
    the database (row-locked on PostgreSQL) so that every replica shares the pace.

    Turns are handed out in batches: whoever holds the process's lock reserves a slot
    for every send waiting in the process, whatever its sender, in one transaction, so
    the row locks are taken once per batch rather than once per message (an e-mail
    batch to fifty receiving domains is one transaction, not fifty)."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    per_second: float
    max_wait: float
    sleep: Sleep = asyncio.sleep
    # SQLite has one writer: take turns in-process rather than meet a locked database.
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _waiting: dict[str, list[asyncio.Future[float]]] = field(default_factory=dict)

    async def wait_turn(self, sender: str) -> None:
        turn: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(sender, []).append(turn)
        async with self._lock:
            queued, self._waiting = self._waiting, {}
            if queued:
                await self._hand_out(queued)
        wait = math.floor(await turn / TICK + 1e-9) * TICK
        if wait > 0:
            await self.sleep(wait)

    async def _hand_out(self, queued: dict[str, list[asyncio.Future[float]]]) -> None:
        """Reserve the next slots for every send waiting in this process, whatever its
        sender (one transaction, the senders' rows locked in one order); each learns its
        wait, or that its sender is too busy (429)."""
        interval = timedelta(seconds=1 / self.per_second)
        now = self.clock.now()
        waits: dict[str, list[float | SendRefused]] = {}
        try:
            async with self.sessions.begin() as session:
                free_at = await self._free_at(session, sorted(queued), now)
                for sender, turns in queued.items():
                    slot = max(now, free_at[sender])
                    waits[sender] = []
                    for _ in turns:
                        ahead = (slot - now).total_seconds()
                        if ahead > self.max_wait:
                            waits[sender].append(
                                SendRefused(
                                    Refusal.SENDER_BUSY,
                                    f"{sender} has more messages waiting than it can send in "
                                    f"{self.max_wait:g} s; try again later.",
                                    retry_after=ahead - self.max_wait,
                                )
                            )
                            continue
                        waits[sender].append(ahead)
                        slot += interval
                    free_at[sender] = slot
                # One statement for every sender (an executemany, by primary key).
                await session.execute(
                    update(SenderPace),
                    [{"sender": k, "next_free_at": v} for k, v in free_at.items()],
                )
        except BaseException as error:
            for turn in (t for turns in queued.values() for t in turns):
                if not turn.done():
                    turn.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for sender, turns in queued.items():
            for turn, outcome in zip(turns, waits[sender], strict=True):
                if isinstance(outcome, SendRefused):
                    turn.set_exception(outcome)
                else:
                    turn.set_result(outcome)

    async def _free_at(
        self, session: AsyncSession, senders: list[str], now: datetime
    ) -> dict[str, datetime]:
        """When each sender is next free, its row locked (in sender order, so that
        replicas never wait on each other in a circle); a sender's first row made now."""
        rows = await session.execute(
            select(SenderPace.sender, SenderPace.next_free_at)
            .where(SenderPace.sender.in_(senders))
            .order_by(SenderPace.sender)
            .with_for_update()
        )
        found: dict[str, datetime] = {sender: free for sender, free in rows}
        for sender in senders:
            if sender in found:
                continue
            try:
                async with session.begin_nested():
                    session.add(SenderPace(sender=sender, next_free_at=now))
                found[sender] = now
            except IntegrityError:  # another replica made it first
                row = await session.get(
                    SenderPace, sender, with_for_update=True, populate_existing=True
                )
                assert row is not None
                found[sender] = row.next_free_at
        return found
