"""Enrolment: putting a person into a follow-up sequence.

`enrol` checks the sequence's entry conditions (not paused, not in it already, the
re-entry policy, consent, segments) and, when they hold, records the enrolment and
schedules its first step as due now; backend.sequences.scheduler.worker runs it from there.
`enrol_on_events` enrols the people behind newly recorded events into every sequence
whose trigger they match: an `event` trigger, and the bot's reports (`intent_expressed`
for an `intent` trigger, `form_completed` for a `form_completed` trigger).
backend.sequences.segment_entries enrols people who enter a segment (`segment_entered`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger as consent
from backend.consent.ledger import CONCRETE_CHANNELS, Channel, Purpose
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import Enrolment, Profile, SequenceWork
from backend.scoring.rules import ScoringRules
from backend.segments import store as segment_store
from backend.segments.rules import Scalar
from backend.sequences.definition import (
    ConsentNeeded,
    EventTrigger,
    FormCompletedTrigger,
    IntentTrigger,
    ReentryPolicy,
    SequenceDefinition,
    Trigger,
)

log = get_logger(__name__)

ACTIVE, EXITED, COMPLETED = "active", "exited", "completed"


@dataclass(frozen=True)
class TriggerEvent:
    """What enrolled someone, as templates see it (`event.type`, `event.properties`)."""

    type: str
    properties: Mapping[str, Any] = field(default_factory=dict)


class EntryRefused(Exception):
    """The entry conditions do not let this person in; `kind` names why."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# The events the bot's conversations report (message_rules/rasa_events.py, posted by
# bot/conversation_events.py or consumed from RabbitMQ by backend/rasa_events), which
# intent and form triggers enrol on.
INTENT_EXPRESSED = "intent_expressed"
FORM_COMPLETED = "form_completed"


def matches(where: Mapping[str, Scalar], properties: Mapping[str, Any]) -> bool:
    """An event's properties hold every `where` value (equal, or the same as text)."""
    for key, wanted in where.items():
        if key not in properties:
            return False
        found = properties[key]
        if found != wanted and str(found) != str(wanted):
            return False
    return True


async def check_entry(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile: Profile,
    rules: ScoringRules,
    clock: Clock,
) -> None:
    """Raises EntryRefused unless this person may enter the sequence now."""
    now = clock.now()
    if sequence.paused:
        raise EntryRefused("sequence-paused", f"The sequence {sequence.name!r} is paused.")
    earlier = list(
        await session.scalars(
            select(Enrolment)
            .where(Enrolment.sequence == sequence.name, Enrolment.profile_id == profile.id)
            .order_by(Enrolment.updated_at.desc())
        )
    )
    if any(e.status == ACTIVE for e in earlier):
        raise EntryRefused("already-enrolled", "This person is in the sequence already.")
    if earlier:
        policy = sequence.reentry
        if policy.policy is ReentryPolicy.NEVER:
            raise EntryRefused(
                "reentry-refused",
                "This person was in the sequence before and it allows no re-entry (never).",
            )
        if policy.policy is ReentryPolicy.AFTER:
            assert policy.after is not None
            left = max(e.updated_at for e in earlier)
            if now < left + policy.after:
                raise EntryRefused(
                    "reentry-too-soon",
                    f"This person left the sequence at {left.isoformat()}; they may enter "
                    f"again from {(left + policy.after).isoformat()}.",
                )
    needed = sequence.entry.consent
    if needed is not None:
        channels = CONCRETE_CHANNELS if needed is ConsentNeeded.ANY else (Channel(needed.value),)
        granted = [
            c for c in channels if await consent.may_send(session, profile.id, c, Purpose.MARKETING)
        ]
        if not granted:
            raise EntryRefused(
                "consent-missing",
                f"This person has not agreed to marketing on {needed.value}.",
            )
    context = rules.context(now)
    for name, wanted in [(n, True) for n in sequence.entry.segments] + [
        (n, False) for n in sequence.entry.not_segments
    ]:
        segment = await segment_store.get(session, name)
        if segment is None:
            raise EntryRefused("segment-missing", f"There is no segment {name!r}.")
        member = await segment_store.is_member(
            session, segment_store.rule_of(segment), context, profile.id
        )
        if member is not wanted:
            raise EntryRefused(
                "segment-mismatch",
                f"This person is {'not ' if wanted else ''}in the segment {name!r}.",
            )


async def enrol(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile: Profile,
    event: TriggerEvent,
    clock: Clock,
    rules: ScoringRules,
) -> Enrolment:
    """Enrol after checking the entry conditions; the first step is due now.
    Raises EntryRefused."""
    await check_entry(session, sequence, profile, rules, clock)
    now = clock.now()
    first = sequence.steps[0].id
    enrolment = Enrolment(
        id=uuid.uuid4(),
        sequence=sequence.name,
        profile_id=profile.id,
        status=ACTIVE,
        current_step=first,
        trigger_type=event.type,
        trigger_properties=dict(event.properties),
        variants={},
        enrolled_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(enrolment)
            await session.flush()
            session.add(SequenceWork(enrolment_id=enrolment.id, step=first, due_at=now, attempt=1))
            await session.flush()
    except IntegrityError as error:
        # The same person enrolled at the same moment by another request.
        raise EntryRefused("already-enrolled", "This person is in the sequence already.") from error
    log.info("sequence.enrolled", sequence=sequence.name, profile_id=str(profile.id))
    return enrolment


@dataclass(frozen=True)
class RecordedEvent:
    profile_id: uuid.UUID
    type: str
    properties: Mapping[str, Any]


def _intent_matches(wanted: str, expressed: Any) -> bool:
    """`faq` is any FAQ the bot answered (`faq/free_trial`, …); `faq/free_trial` only that."""
    return isinstance(expressed, str) and (
        expressed == wanted or ("/" not in wanted and expressed.startswith(wanted + "/"))
    )


def triggered_by(trigger: Trigger, event_type: str, properties: Mapping[str, Any]) -> bool:
    """Whether a recorded event enrols into a sequence with this trigger."""
    match trigger:
        case EventTrigger(event=wanted, where=where):
            return wanted == event_type and matches(where, properties)
        case IntentTrigger(intent=wanted):
            return event_type == INTENT_EXPRESSED and _intent_matches(
                wanted, properties.get("intent")
            )
        case FormCompletedTrigger(form_completed=wanted):
            return event_type == FORM_COMPLETED and properties.get("form") == wanted
    return False


async def enrol_if_allowed(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile: Profile,
    event: TriggerEvent,
    clock: Clock,
    rules: ScoringRules,
) -> Enrolment | None:
    """Enrol unless the entry conditions refuse; a refusal is logged, not raised."""
    try:
        return await enrol(session, sequence, profile, event, clock, rules)
    except EntryRefused as refused:
        log.info(
            "sequence.entry_refused", sequence=sequence.name,
            profile_id=str(profile.id), reason=refused.kind, trigger=event.type,
        )  # fmt: skip
        return None


async def enrol_on_events(
    session: AsyncSession,
    sequences: Sequence[SequenceDefinition],
    recorded: Iterable[RecordedEvent],
    clock: Clock,
    rules: ScoringRules,
) -> list[Enrolment]:
    """Enrol each event's person into every sequence whose trigger the event matches (an
    event trigger, or an intent or form trigger for the bot's `intent_expressed` and
    `form_completed`); people the entry conditions refuse are left out (and logged)."""
    made: list[Enrolment] = []
    for event in recorded:
        for sequence in sequences:
            if not triggered_by(sequence.trigger, event.type, event.properties):
                continue
            profile = await session.get(Profile, event.profile_id)
            if profile is None:
                continue
            enrolment = await enrol_if_allowed(
                session, sequence, profile, TriggerEvent(event.type, event.properties),
                clock, rules,
            )  # fmt: skip
            if enrolment is not None:
                made.append(enrolment)
    return made
