"""Held messages: marketing messages a door's guards would not let go at once (quiet
hours, the frequency cap), kept in `held_messages` and delivered when they may.

A caller that asked to hold (the default, `NotNow.HOLD`) gets the held message back
(`Held`) instead of a sent one. `HeldMessages.release_due` is run by the scheduler's
loop (in `parley run` and in every `parley worker`): it leases the held messages whose
time has come, a few at a time, and sends each through its door with the send key
`held:<id>`, so that a release repeated after a crash is the same send. The door checks
consent and the guards again: a withdrawal meanwhile refuses it; a cap filled meanwhile
holds it again, until the new time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import HeldMessage, Message
from backend.messaging.door import NotNow, Refusal, SendRefused, not_now
from backend.messaging.guards import ContactGuard, Hold, Limits, Wanted

log = get_logger(__name__)

HELD, SENT, REFUSED, CANCELLED = "held", "sent", "refused", "cancelled"
# Refusals after which the held message is tried again later rather than given up.
TRY_AGAIN = frozenset(
    {Refusal.TWILIO_UNAVAILABLE, Refusal.SEND_IN_PROGRESS, Refusal.SENDER_BUSY,
     Refusal.MAIL_UNAVAILABLE}
)  # fmt: skip
# Refusals that say "not yet": the message waits again, until `not_before`.
NOT_YET = frozenset({Refusal.QUIET_HOURS, Refusal.FREQUENCY_CAP})


@dataclass(frozen=True)
class Held:
    """A message a door held instead of sending (or, for a repeated send key, the
    message it held before)."""

    message: HeldMessage
    repeated: bool = False


@dataclass(frozen=True)
class Outbound:
    """What a held message asks a door to send (a door's own request, without its
    delivery details)."""

    channel: str
    to: str
    body: str
    purpose: str
    send_key: str | None
    if_not_now: NotNow
    requested_by: str | None
    media_urls: Sequence[str] = ()
    # An e-mail's subject and HTML body, kept with it (`media["email"]`).
    details: Mapping[str, Any] | None = None


def hold_or_refuse(
    session: AsyncSession,
    wanted: Outbound,
    profile_id: uuid.UUID,
    hold: Hold,
    now: datetime,
    noun: str,
) -> Held | SendRefused:
    """As the caller asked: the message kept in the caller's transaction, to be
    delivered at `hold.until`, or refused with that time."""
    if wanted.if_not_now is NotNow.REFUSE:
        return not_now(hold, now, noun)
    row = HeldMessage(
        profile_id=profile_id, channel=wanted.channel, to_address=wanted.to,
        purpose=wanted.purpose, body=wanted.body,
        media={"urls": list(wanted.media_urls), **({"email": dict(wanted.details)}
                                                   if wanted.details else {})},
        send_key=wanted.send_key, reason=hold.reason.value, not_before=hold.until,
        status=HELD, attempts=0, created_by=wanted.requested_by, created_at=now,
        updated_at=now,
    )  # fmt: skip
    session.add(row)
    log.info("message.held", held_channel=wanted.channel, reason=hold.reason.value,
             not_before=hold.until.isoformat())  # fmt: skip
    return Held(row)


async def guard_one(
    session: AsyncSession,
    guard: ContactGuard,
    wanted: Outbound,
    profile_id: uuid.UUID,
    limits: Limits | None,
    now: datetime,
    noun: str,
) -> Held | SendRefused | None:
    """The guards for one marketing message: None if it may go now, else held or
    refused as the caller asked."""
    [hold] = await guard.check(session, [Wanted(profile_id, limits)], now)
    return None if hold is None else hold_or_refuse(session, wanted, profile_id, hold, now, noun)


async def earlier_held(session: AsyncSession, keys: Iterable[str | None]) -> dict[str, Held]:
    """Held messages under these send keys, by key (the same key again is the same
    message, whether it is still held or has gone since)."""
    wanted = {k for k in keys if k is not None}
    if not wanted:
        return {}
    rows = await session.scalars(select(HeldMessage).where(HeldMessage.send_key.in_(wanted)))
    return {row.send_key: Held(row, repeated=True) for row in rows if row.send_key}


async def earlier_send(
    session: AsyncSession, key: str | None, channel: str
) -> Held | Message | None:
    """What a door sent or held before under this send key, if anything: the same key
    again is the same send. Raises SEND_KEY_REUSED when the key was used on another
    channel."""
    if key is None:
        return None
    if held := (await earlier_held(session, [key])).get(key):
        return held
    row = await session.scalar(select(Message).where(Message.send_key == key))
    if row is not None and row.channel != channel:
        raise SendRefused(
            Refusal.SEND_KEY_REUSED, f"This send key was used for a {row.channel} message.",
            [row],
        )  # fmt: skip
    return row


class Deliver(Protocol):
    """Sends a held message through its channel's door, as the same send each time
    (`send_key`); returns the first message recorded, or raises `SendRefused`."""

    async def __call__(self, held: HeldMessage, send_key: str) -> int: ...


@dataclass
class HeldMessages:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    # Each channel's delivery (sms, voice, web), from the doors the process has.
    deliver: dict[str, Deliver]
    batch: int = 50
    lease: timedelta = timedelta(seconds=120)
    retry_after: timedelta = timedelta(seconds=60)
    max_attempts: int = 10

    async def release_due(self) -> int:
        """Deliver the held messages whose time has come; how many were tried."""
        ids = await self._claim()
        for held_id in ids:
            await self._release(held_id)
        return len(ids)

    async def _claim(self) -> list[int]:
        now = self.clock.now()
        async with self.sessions.begin() as session:
            candidates = list(
                await session.scalars(
                    select(HeldMessage.id)
                    .where(
                        HeldMessage.status == HELD,
                        HeldMessage.not_before <= now,
                        or_(HeldMessage.lease_until.is_(None), HeldMessage.lease_until < now),
                    )
                    .order_by(HeldMessage.not_before)
                    .limit(self.batch)
                )
            )
            claimed: list[int] = []
            for held_id in candidates:
                # Conditional: a row another worker leased meanwhile is not taken.
                taken = await session.execute(
                    update(HeldMessage)
                    .where(
                        HeldMessage.id == held_id,
                        HeldMessage.status == HELD,
                        or_(HeldMessage.lease_until.is_(None), HeldMessage.lease_until < now),
                    )
                    .values(lease_until=now + self.lease)
                )
                if taken.rowcount:  # type: ignore[attr-defined]
                    claimed.append(held_id)
        return claimed

    async def _release(self, held_id: int) -> None:
        async with self.sessions() as session:
            held = await session.get(HeldMessage, held_id)
        if held is None or held.status != HELD:
            return
        deliver = self.deliver.get(held.channel)
        status, detail, message_id = HELD, None, None
        not_before = held.not_before
        try:
            if deliver is None:
                raise SendRefused(Refusal.TWILIO_UNAVAILABLE, f"{held.channel} is not configured")
            message_id = await deliver(held, f"held:{held.id}")
            status = SENT
        except SendRefused as refused:
            detail = f"{refused.kind}: {refused}"
            if refused.kind in NOT_YET and refused.not_before is not None:
                not_before = refused.not_before
            elif refused.kind in TRY_AGAIN and held.attempts + 1 < self.max_attempts:
                not_before = self.clock.now() + self.retry_after * 2**held.attempts
            else:
                status = REFUSED
        except Exception as error:  # one bad message must not stop the others
            log.exception("message.release_failed", held_id=held.id)
            detail = f"{type(error).__name__}: {error}"
            not_before = self.clock.now() + self.retry_after * 2**held.attempts
        async with self.sessions.begin() as session:
            await session.execute(
                update(HeldMessage)
                .where(HeldMessage.id == held.id, HeldMessage.status == HELD)
                .values(
                    status=status,
                    detail=detail,
                    message_id=message_id,
                    not_before=not_before,
                    lease_until=None,
                    attempts=held.attempts + 1,
                    updated_at=self.clock.now(),
                )
            )
        log.info("message.released", held_id=held.id, status=status)


async def cancel(session: AsyncSession, held: HeldMessage, now: datetime, by: str) -> bool:
    """Cancel a message still held; False if it has gone (or was cancelled) already."""
    if held.status != HELD:
        return False
    held.status, held.detail, held.updated_at = CANCELLED, f"cancelled by {by}", now
    return True
