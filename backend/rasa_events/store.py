"""Rasa's conversation events stored once, and what they mean recorded.

`RasaEventStore.record` takes a batch of events as Rasa published them and, in the
caller's transaction:

- skips those held already: the same `event_key` (message_rules.rasa_events, made from
  the event's conversation, kind, timestamp and what tells it apart), so a redelivery
  after a crash or a republish by `rasa export` is held once;
- skips those of a conversation whose person was erased after the event was made (a
  copy still queued must not bring back what an erasure removed);
- stores the others in the order they came (`rasa_events.id`);
- records the behaviour events they mean (`intent_expressed`, `form_completed`) through
  `EventRecorder.record`, under the idempotency keys the bot's HTTP broker uses, so
  whichever path reports one first, it is stored once.

Whether a loop's end is a completed form depends on the conversation before it: that
state (the channel of its latest message, its latest action) is read from the events
stored before, not from this process's memory, so a restarted consumer, or another one,
still places a form.

Order: Rasa stamps the events an action returns when the action makes them, a moment
before the `action` event it appends ahead of them, so a conversation read by
`timestamp` can show a form's end just before the form's own action. The order of
arrival (`id`) is the conversation's order as Rasa's tracker store keeps it, and is
what the state is read by; `transcript` is Rasa's order in time (timestamp, then
arrival).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, InvalidAddress, normalise_address, redact
from backend.core.logs import get_logger
from backend.core.models import RasaEvent
from backend.events.recording import CLOCK_SKEW_SECONDS, EventRecorder, Incoming
from backend.people import erasure
from message_rules.rasa_events import (
    STATE_EVENTS,
    BehaviourEvent,
    ConversationState,
    UnplacedForm,
    depends_on_history,
    event_key,
    meaning,
    state_after,
)

log = get_logger(__name__)

# Who the audit log says recorded the behaviour events read from Rasa's events.
RASA = audit.SystemActor("rasa")
MAX_BODY_BYTES = 1_000_000  # a Rasa event is a few kilobytes; anything this big is not one
MAX_SENDER_ID = 320  # the longest conversation id (a web chat session) an identity holds
MAX_TYPE = 64


class NotAnEvent(ValueError):
    """A message that is not a Rasa event as Rasa publishes it; the message says why."""


@dataclass(frozen=True)
class PublishedEvent:
    """A Rasa event read from a message: its conversation, kind and timestamp, and the
    event itself as published."""

    sender_id: str
    type: str
    timestamp: float
    data: dict[str, Any]
    key: str


def _no_constant(name: str) -> Any:
    raise NotAnEvent(f"JSON has {name}, which no database stores as JSON")


def read_message(body: bytes) -> PublishedEvent:
    """The Rasa event in a message's body (the event dict, JSON, as Rasa's pika broker
    publishes it). Raises NotAnEvent."""
    if len(body) > MAX_BODY_BYTES:
        raise NotAnEvent(f"larger than {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except (ValueError, RecursionError) as error:
        raise NotAnEvent(
            error.args[0] if isinstance(error, NotAnEvent) else "not JSON in UTF-8"
        ) from error
    if not isinstance(data, dict):
        raise NotAnEvent("not a JSON object")
    sender, kind, timestamp = data.get("sender_id"), data.get("event"), data.get("timestamp")
    if not isinstance(sender, str) or not 0 < len(sender) <= MAX_SENDER_ID:
        raise NotAnEvent(f"no sender_id (a string of 1 to {MAX_SENDER_ID} characters)")
    if not isinstance(kind, str) or not 0 < len(kind) <= MAX_TYPE:
        raise NotAnEvent(f"no event (a string of 1 to {MAX_TYPE} characters)")
    if (
        not isinstance(timestamp, (int, float))
        or isinstance(timestamp, bool)
        or not math.isfinite(timestamp)
        or not 0 <= timestamp < 32_503_680_000  # before the year 3000
    ):
        raise NotAnEvent("no timestamp (seconds since the epoch)")
    return PublishedEvent(sender, kind, float(timestamp), data, event_key(data))


@dataclass(frozen=True)
class Recorded:
    """What became of a batch."""

    stored: int  # events new to the store
    duplicates: int  # held already, or twice in the batch
    erased: int  # of a conversation whose person was erased since: not stored
    reported: int  # behaviour events new to `events`


@dataclass(frozen=True)
class RasaEventStore:
    recorder: EventRecorder
    forms: frozenset[str]  # the bot's forms (bot/domain): only they complete
    clock: Clock
    default_region: str  # for the phone numbers of SMS and call conversations

    async def record(self, session: AsyncSession, batch: Sequence[PublishedEvent]) -> Recorded:
        """Store the batch's new events and record what they mean, in `session`'s
        transaction (all of it or none of it)."""
        now = self.clock.now()
        unique: dict[str, PublishedEvent] = {}
        for event in batch:
            unique.setdefault(event.key, event)
        held = set(
            await session.scalars(
                select(RasaEvent.idempotency_key).where(RasaEvent.idempotency_key.in_(unique))
            )
        )
        fresh = [e for e in unique.values() if e.key not in held]
        erased = await erasure.erased_conversations(
            session, self.recorder.directory.erasure_key, {e.sender_id for e in fresh}
        )
        kept = [
            e
            for e in fresh
            if e.sender_id not in erased or e.timestamp > erased[e.sender_id].timestamp()
        ]
        rows = [
            {"sender_id": e.sender_id, "type": e.type, "timestamp": e.timestamp,
             "received_at": now, "data": e.data, "idempotency_key": e.key}
            for e in kept
        ]  # fmt: skip
        ids: list[int] = []
        if rows:
            inserted = insert(RasaEvent).returning(RasaEvent.id, sort_by_parameter_order=True)
            ids = list(await session.scalars(inserted, rows))
        reports: list[Incoming] = []
        for event, row_id in zip(kept, ids, strict=True):
            state = ConversationState()
            if depends_on_history(event.data):
                state = await _state_before(session, event.sender_id, row_id)
            found = meaning(state, event.data, self.forms)
            if isinstance(found, UnplacedForm):
                log.warning(
                    "rasa_events.channel_unknown", conversation=_shown(found.conversation),
                    form=found.form,
                )  # fmt: skip
            elif found is not None and (report := self._incoming(found, now)) is not None:
                reports.append(report)
        reported = 0
        if reports:
            outcomes = await self.recorder.record(session, reports, RASA)
            reported = sum(outcome.status == "stored" for outcome in outcomes)
        return Recorded(
            stored=len(kept),
            duplicates=len(batch) - len(fresh),
            erased=len(fresh) - len(kept),
            reported=reported,
        )

    def _incoming(self, event: BehaviourEvent, now: datetime) -> Incoming | None:
        """The event for the recorder, or None for one the events API would refuse too
        (an address that is none of its kind, a time too far ahead), logged."""
        try:
            kind = IdentityKind(event.kind)
            address = normalise_address(kind, event.address, self.default_region)
        except (ValueError, InvalidAddress) as error:
            log.warning(
                "rasa_events.unidentifiable", type=event.type, kind=event.kind,
                conversation=_shown(event.address), reason=str(error),
            )  # fmt: skip
            return None
        if event.occurred_at and (event.occurred_at - now).total_seconds() > CLOCK_SKEW_SECONDS:
            log.warning(
                "rasa_events.in_the_future", type=event.type,
                conversation=redact(kind, address), occurred_at=event.occurred_at.isoformat(),
            )  # fmt: skip
            return None
        return Incoming(
            type=event.type,
            properties=dict(event.properties),
            occurred_at=event.occurred_at,
            idempotency_key=event.idempotency_key,
            identity=(kind, address),
        )


async def _state_before(session: AsyncSession, sender_id: str, row_id: int) -> ConversationState:
    """The conversation's state just before the event stored as `row_id`: from its
    latest message and its latest event of STATE_EVENTS before it."""
    before = (RasaEvent.sender_id == sender_id, RasaEvent.id < row_id)
    latest = select(RasaEvent.id, RasaEvent.data).order_by(RasaEvent.id.desc()).limit(1)
    found: dict[int, dict[str, Any]] = {}
    for query in (
        latest.where(*before, RasaEvent.type == "user"),
        latest.where(*before, RasaEvent.type.in_(STATE_EVENTS)),
    ):
        found.update((event_id, data) for event_id, data in (await session.execute(query)).all())
    return state_after(found[event_id] for event_id in sorted(found))


async def transcript(session: AsyncSession, sender_id: str) -> list[dict[str, Any]]:
    """A conversation's events held, in Rasa's order in time (timestamp, then arrival)."""
    return list(
        await session.scalars(
            select(RasaEvent.data)
            .where(RasaEvent.sender_id == sender_id)
            .order_by(RasaEvent.timestamp, RasaEvent.id)
        )
    )


def _shown(conversation: str) -> str:
    """A conversation id as an info-level log line may show it (a phone number is
    redacted; a chat session or an Alexa user id is not personal data by itself)."""
    return redact(IdentityKind.SMS, conversation) if conversation.startswith("+") else conversation
