"""The consent ledger: who agreed to what, on which channel, in whose words.

Every change is a new ledger line; nothing is updated or deleted (erasure aside). The
current state per channel and purpose is the ledger folded in time order, kept in
`consent_states` and rewritten from the ledger whenever a profile's ledger grows, so
that "may we send marketing by SMS to this person now?" is one indexed lookup.

Rules of the fold, per concrete channel and purpose, in (occurred_at, seq) order:
- a withdraw makes the state `withdrawn` (a withdraw on channel `all` does so everywhere);
- an effective grant makes it `granted`;
- a pending grant (double opt-in not yet confirmed) makes it `pending`, unless it is
  already `granted`: asking again never takes consent away;
- no line at all is `none`.
Marketing may be sent only when `granted`; transactional messages unless `withdrawn`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit, bulk
from backend.core.clock import Clock
from backend.core.models import ConsentEvent, ConsentState


class Channel(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    WEB = "web"
    ALL = "all"


CONCRETE_CHANNELS = (Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.WEB)


class Purpose(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class Action(StrEnum):
    GRANT = "grant"
    WITHDRAW = "withdraw"


class Source(StrEnum):
    SMS_KEYWORD = "sms_keyword"
    DIALOGUE = "dialogue"
    API = "api"
    IMPORT = "import"
    CONSOLE = "console"
    # The person's unsubscribe from a marketing e-mail (backend.consent.unsubscribe).
    UNSUBSCRIBE = "unsubscribe"
    # The person followed the confirmation e-mail's link (backend.consent.email_confirmation).
    EMAIL_LINK = "email_link"
    # The person marked an e-mail as spam (backend.messaging.email_feedback).
    EMAIL_COMPLAINT = "email_complaint"
    # Written by Parley itself when an erased person turns up again (see backend.people.erasure).
    ERASURE = "erasure"


class State(StrEnum):
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    PENDING = "pending"
    NONE = "none"


# Sources that carry the person's own, new, explicit words. Only these may grant
# consent to someone who once asked to be erased.
OWN_WORDS = frozenset({Source.SMS_KEYWORD, Source.DIALOGUE})


def needs_double_opt_in(channel: Channel, purpose: Purpose) -> bool:
    """SMS and e-mail marketing need the person to confirm before they are effective: a
    YES to the confirmation text, a click in the confirmation e-mail."""
    return channel in (Channel.SMS, Channel.EMAIL) and purpose is Purpose.MARKETING


class ConsentRefused(ValueError):
    """The ledger cannot take this line; the message says why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Entry:
    """A ledger line to append."""

    channel: Channel
    purpose: Purpose
    action: Action
    source: Source
    wording: str | None = None
    reply: str | None = None
    metadata: Mapping[str, Any] | None = None
    occurred_at: datetime | None = None
    # True to confirm the pending double opt-in grant for this channel and purpose.
    confirm: bool = False


async def ledger(session: AsyncSession, profile_id: uuid.UUID) -> list[ConsentEvent]:
    """A profile's ledger in the order the fold reads it."""
    result = await session.scalars(
        select(ConsentEvent)
        .where(ConsentEvent.profile_id == profile_id)
        .order_by(ConsentEvent.occurred_at, ConsentEvent.seq)
    )
    return list(result)


@dataclass(frozen=True)
class Recorded:
    line: ConsentEvent
    state: State  # the channel's state for the purpose after the line
    allowed: bool  # whether that state allows messages of the purpose

    @property
    def awaits_confirmation(self) -> bool:
        """A double opt-in grant: the person is to be asked to confirm it."""
        return self.line.pending and self.state is State.PENDING


async def record(
    session: AsyncSession,
    profile_id: uuid.UUID,
    entry: Entry,
    clock: Clock,
    actor: audit.Actor,
) -> Recorded:
    """Record a consent decision, whoever reports it (the API, a keyword text, Twilio
    saying the person unsubscribed at the carrier, an erasure's tombstone): the ledger
    line, the refreshed state and the audit log entry, in the caller's transaction."""
    line, folded = await _append(session, profile_id, entry, clock, actor.name)
    channel = Channel.SMS if entry.channel is Channel.ALL else entry.channel
    now = folded.get((channel, entry.purpose), (State.NONE, line.occurred_at))[0]
    await audit.record(
        session, clock, actor, "record_consent", str(profile_id),
        seq=line.seq, channel=line.channel, purpose=line.purpose,
        entry="confirm" if entry.confirm else entry.action.value, source=line.source,
    )  # fmt: skip
    return Recorded(line, now, allows(now, entry.purpose))


async def _append(
    session: AsyncSession, profile_id: uuid.UUID, entry: Entry, clock: Clock, actor: str | None
) -> tuple[ConsentEvent, Folded]:
    """Append one line (after checking it may be appended) and refresh the states; the
    line and the states as they are now."""
    now = clock.now()
    occurred_at = entry.occurred_at or now
    if occurred_at > now:
        raise ConsentRefused("consent-in-future", "occurred_at is in the future")
    lines = await ledger(session, profile_id)
    pending = False
    confirms: int | None = None
    if entry.action is Action.GRANT:
        if entry.channel is Channel.ALL:
            raise ConsentRefused(
                "consent-channel-all",
                "consent is granted per channel; only a withdrawal may name channel 'all'",
            )
        if entry.source not in OWN_WORDS and _erased_before(lines):
            raise ConsentRefused(
                "erased-person",
                "this person once asked to be erased: only their own new words "
                "(source 'dialogue' or 'sms_keyword') can grant consent again",
            )
        if entry.confirm:
            confirms = _open_request(lines, entry.channel, entry.purpose)
            if confirms is None:
                raise ConsentRefused(
                    "nothing-to-confirm",
                    f"there is no pending {entry.channel} {entry.purpose} grant to confirm",
                )
        else:
            pending = needs_double_opt_in(entry.channel, entry.purpose)
    elif entry.confirm:
        raise ConsentRefused("nothing-to-confirm", "only a grant can confirm")
    line = ConsentEvent(
        profile_id=profile_id,
        channel=entry.channel.value,
        purpose=entry.purpose.value,
        action=entry.action.value,
        pending=pending,
        confirms_seq=confirms,
        source=entry.source.value,
        wording=entry.wording,
        reply=entry.reply,
        channel_metadata=dict(entry.metadata or {}),
        occurred_at=occurred_at,
        recorded_at=now,
        recorded_by=actor,
    )
    session.add(line)
    await session.flush()
    return line, await refresh(session, profile_id, [*lines, line])


def _erased_before(lines: Iterable[ConsentEvent]) -> bool:
    return any(line.source == Source.ERASURE for line in lines)


async def open_request(
    session: AsyncSession, profile_id: uuid.UUID, channel: Channel, purpose: Purpose
) -> int | None:
    """The ledger line of the person's grant still waiting for confirmation, if any."""
    return _open_request(await ledger(session, profile_id), channel, purpose)


def _open_request(lines: list[ConsentEvent], channel: Channel, purpose: Purpose) -> int | None:
    """The pending grant still waiting for confirmation, if any."""
    open_seq: int | None = None
    for line in sorted(lines, key=_order):
        if line.purpose != purpose or line.channel not in (channel, Channel.ALL):
            continue
        if line.action == Action.GRANT and line.pending:
            open_seq = line.seq
        elif line.action == Action.WITHDRAW or line.confirms_seq is not None:
            open_seq = None
    return open_seq


def _order(line: ConsentEvent) -> tuple[datetime, int]:
    return (line.occurred_at, line.seq)


Folded = dict[tuple[Channel, Purpose], tuple[State, datetime]]


def fold(lines: Iterable[ConsentEvent]) -> Folded:
    """The current state (and since when) of every (channel, purpose) the ledger
    mentions."""
    states: Folded = {}
    for line in sorted(lines, key=_order):
        purpose = Purpose(line.purpose)
        channels = CONCRETE_CHANNELS if line.channel == Channel.ALL else (Channel(line.channel),)
        for channel in channels:
            current = states.get((channel, purpose), (State.NONE, line.occurred_at))[0]
            if line.action == Action.WITHDRAW:
                new = State.WITHDRAWN
            elif not line.pending:
                new = State.GRANTED
            elif current is State.GRANTED:
                continue
            else:
                new = State.PENDING
            if new is not current:
                states[(channel, purpose)] = (new, line.occurred_at)
    return states


async def refresh(
    session: AsyncSession, profile_id: uuid.UUID, lines: list[ConsentEvent] | None = None
) -> Folded:
    """Rewrite a profile's consent states from its ledger; the states written."""
    if lines is None:
        lines = await ledger(session, profile_id)
    await session.execute(delete(ConsentState).where(ConsentState.profile_id == profile_id))
    folded = fold(lines)
    for (channel, purpose), (state, since) in folded.items():
        session.add(
            ConsentState(
                profile_id=profile_id,
                channel=channel.value,
                purpose=purpose.value,
                state=state.value,
                since=since,
            )
        )
    await session.flush()
    return folded


async def state(
    session: AsyncSession, profile_id: uuid.UUID, channel: Channel, purpose: Purpose
) -> State:
    value = await session.scalar(
        select(ConsentState.state).where(
            ConsentState.profile_id == profile_id,
            ConsentState.channel == channel.value,
            ConsentState.purpose == purpose.value,
        )
    )
    return State(value) if value else State.NONE


def allows(current: State, purpose: Purpose) -> bool:
    if purpose is Purpose.MARKETING:
        return current is State.GRANTED
    return current is not State.WITHDRAWN


async def may_send(
    session: AsyncSession, profile_id: uuid.UUID, channel: Channel, purpose: Purpose
) -> bool:
    """May we send this person a message of this purpose on this channel, now?

    What every sender asks before sending, at the moment of sending.
    """
    if channel is Channel.ALL:
        raise ValueError("ask about one channel at a time")
    return allows(await state(session, profile_id, channel, purpose), purpose)


# One person's consent now: (channel, purpose) -> (state, since); missing means NONE.
Current = dict[tuple[Channel, Purpose], tuple[State, datetime]]


def allows_now(current: Current, channel: Channel, purpose: Purpose) -> bool:
    """`may_send`, for consent read beforehand (`current_of`)."""
    found = current.get((channel, purpose))
    return allows(found[0] if found else State.NONE, purpose)


async def current_of(
    session: AsyncSession, profile_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Current]:
    """The consent of many people at once (a batch of sends checks them in one query);
    everyone asked about is in the answer."""
    wanted = set(profile_ids)
    found: dict[uuid.UUID, Current] = {p: {} for p in wanted}
    if not wanted:
        return found
    rows = await session.execute(
        select(
            ConsentState.profile_id, ConsentState.channel, ConsentState.purpose,
            ConsentState.state, ConsentState.since,
        ).where(bulk.one_of(session, ConsentState.profile_id, wanted))
    )  # fmt: skip
    for profile_id, channel, purpose, value, since in rows:
        found[profile_id][(Channel(channel), Purpose(purpose))] = (State(value), since)
    return found


async def states(session: AsyncSession, profile_id: uuid.UUID) -> list[ConsentState]:
    result = await session.scalars(
        select(ConsentState)
        .where(ConsentState.profile_id == profile_id)
        .order_by(ConsentState.channel, ConsentState.purpose)
    )
    return list(result)
