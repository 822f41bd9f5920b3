"""Pacing a sending number: each number sends at most `per_second` texts a second, the
turns handed out in order, so a burst queues in the backend instead of at Twilio."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

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
    for every send waiting in the process with one row update, so the row lock is taken
    once per batch rather than once per text."""

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
            queued = self._waiting.pop(sender, [])
            if queued:
                await self._hand_out(sender, queued)
        wait = math.floor(await turn / TICK + 1e-9) * TICK
        if wait > 0:
            await self.sleep(wait)

    async def _hand_out(self, sender: str, queued: list[asyncio.Future[float]]) -> None:
        """Reserve the next slots for the queued sends; each learns its wait, or that the
        number is too busy (429)."""
        interval = timedelta(seconds=1 / self.per_second)
        now = self.clock.now()
        waits: list[float | SendRefused] = []
        try:
            async with self.sessions.begin() as session:
                row = await session.get(SenderPace, sender, with_for_update=True)
                if row is None:
                    try:
                        async with session.begin_nested():
                            row = SenderPace(sender=sender, next_free_at=now)
                            session.add(row)
                    except IntegrityError:
                        row = await session.get(
                            SenderPace, sender, with_for_update=True, populate_existing=True
                        )
                        assert row is not None
                slot = max(now, row.next_free_at)
                for _ in queued:
                    ahead = (slot - now).total_seconds()
                    if ahead > self.max_wait:
                        waits.append(
                            SendRefused(
                                Refusal.SENDER_BUSY,
                                f"{sender} has more texts waiting than it can send in "
                                f"{self.max_wait:g} s; try again later.",
                                retry_after=ahead - self.max_wait,
                            )
                        )
                        continue
                    waits.append(ahead)
                    slot += interval
                row.next_free_at = slot
        except BaseException as error:
            for turn in queued:
                if not turn.done():
                    turn.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for turn, outcome in zip(queued, waits, strict=True):
            if isinstance(outcome, SendRefused):
                turn.set_exception(outcome)
            else:
                turn.set_result(outcome)
