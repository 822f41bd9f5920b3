"""What the SMS door and the call door share when a send's outcome is in doubt.

A door records a message before it asks Twilio, so a crash or a timeout leaves a row
that Twilio may or may not have taken. A retry with the same send key settles it: while
the first attempt may still be on its way nothing is touched; after that, Twilio's own
list (of texts or of calls, from this number to this person, since the record) is read
and an entry no other row claims is adopted; only if there is none is the message sent
again, once consent is checked again, since consent is checked at the moment of sending.
The two doors differ in what they list and how they send; the records are kept here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import ledger as consent
from backend.consent.ledger import Channel, Purpose
from backend.core.clock import Clock
from backend.core.models import Message

# Twilio's and Parley's clocks may disagree this much when matching an entry to its record.
CLOCK_SKEW = timedelta(minutes=10)


class Listed(Protocol):
    """An entry in Twilio's list of texts or calls."""

    @property
    def sid(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class SendRecords:
    """The message rows of sends whose outcome a door is settling."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock

    def still_in_flight(self, rows: Sequence[Message], limit: timedelta) -> timedelta | None:
        """How much longer the earliest attempt that did not fail may still be on its way
        (None: it is not, and the rows may be settled now)."""
        started = [row.created_at for row in rows if row.error_message is None]
        if not started:
            return None
        waited = self.clock.now() - min(started)
        return limit - waited if waited < limit else None

    async def adopt(
        self,
        row: Message,
        listed: Sequence[Listed],
        same: Callable[[Any], bool],
        advance: Callable[[Message, str], object],
    ) -> str | None:
        """Adopt Twilio's entry for this row: one created since the record (clock skew
        allowed) that `same` accepts and no other row claims, the latest such. Its sid,
        or None when Twilio has none."""
        earliest = row.created_at - CLOCK_SKEW
        candidates = [
            item
            for item in listed
            if same(item) and (item.created_at is None or item.created_at >= earliest)
        ]
        if not candidates:
            return None
        async with self.sessions.begin() as session:
            # A status callback may have named this very entry meanwhile: that is ours.
            claimed = set(
                await session.scalars(
                    select(Message.provider_sid).where(
                        Message.provider_sid.in_([item.sid for item in candidates]),
                        Message.id != row.id,
                    )
                )
            )
            match = next((item for item in reversed(candidates) if item.sid not in claimed), None)
            if match is None:
                return None
            stored = await session.get(
                Message, row.id, populate_existing=True, with_for_update=True
            )
            assert stored is not None
            stored.provider_sid, stored.error_message = match.sid, None
            advance(stored, match.status)
        row.provider_sid, row.status, row.error_message = match.sid, stored.status, None
        return match.sid

    async def consent_allows(
        self, profile_id: uuid.UUID | None, channel: Channel, needed: Purpose
    ) -> bool:
        """Whether the person's consent still allows it now (nobody known: yes; the
        door refused marketing to unknown numbers before recording)."""
        if profile_id is None:
            return True
        async with self.sessions() as session:
            return await consent.may_send(session, profile_id, channel, needed)

    async def failed(self, rows: Sequence[Message], code: int | None, reason: str) -> None:
        """These were not sent, and will not be."""
        if not rows:
            return
        async with self.sessions.begin() as session:
            for row in rows:
                stored = await session.get(Message, row.id)
                assert stored is not None
                stored.status, stored.error_code, stored.error_message = "failed", code, reason
                stored.updated_at = self.clock.now()
                row.status, row.error_code, row.error_message = "failed", code, reason

    async def in_doubt(self, rows: Sequence[Message], reason: str) -> None:
        """Say why these are unconfirmed; they stay queued until a retry settles them."""
        async with self.sessions.begin() as session:
            for row in rows:
                stored = await session.get(Message, row.id)
                assert stored is not None
                stored.error_message, stored.updated_at = reason, self.clock.now()
                row.error_message = reason
