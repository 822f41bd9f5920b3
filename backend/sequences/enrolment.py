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
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger as consent
from backend.consent.ledger import CONCRETE_CHANNELS, Channel, Purpose
from backend.core import bulk
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


def entry_refusal(
    sequence: SequenceDefinition,
    earlier: Sequence[Enrolment],
    consent_now: consent.Current,
    now: datetime,
) -> EntryRefused | None:
    """Why this person may not enter the sequence now, from what is known of them (their
    earlier enrolments in it, newest first, and their consent), segments aside; None if
    nothing of that stops them."""
    if sequence.paused:
        return EntryRefused("sequence-paused", f"The sequence {sequence.name!r} is paused.")
    if any(e.status == ACTIVE for e in earlier):
        return EntryRefused("already-enrolled", "This person is in the sequence already.")
    if earlier:
        policy = sequence.reentry
        if policy.policy is ReentryPolicy.NEVER:
            return EntryRefused(
                "reentry-refused",
                "This person was in the sequence before and it allows no re-entry (never).",
            )
        if policy.policy is ReentryPolicy.AFTER:
            assert policy.after is not None
            left = max(e.updated_at for e in earlier)
            if now < left + policy.after:
                return EntryRefused(
                    "reentry-too-soon",
                    f"This person left the sequence at {left.isoformat()}; they may enter "
                    f"again from {(left + policy.after).isoformat()}.",
                )
    needed = sequence.entry.consent
    if needed is not None:
        channels = CONCRETE_CHANNELS if needed is ConsentNeeded.ANY else (Channel(needed.value),)
        if not any(consent.allows_now(consent_now, c, Purpose.MARKETING) for c in channels):
            return EntryRefused(
                "consent-missing",
                f"This person has not agreed to marketing on {needed.value}.",
            )
    return None


async def _check_segments(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile_id: uuid.UUID,
    rules: ScoringRules,
    now: datetime,
) -> None:
    context = rules.context(now)
    for name, wanted in [(n, True) for n in sequence.entry.segments] + [
        (n, False) for n in sequence.entry.not_segments
    ]:
        segment = await segment_store.get(session, name)
        if segment is None:
            raise EntryRefused("segment-missing", f"There is no segment {name!r}.")
        member = await segment_store.is_member(
            session, segment_store.rule_of(segment), context, profile_id
        )
        if member is not wanted:
            raise EntryRefused(
                "segment-mismatch",
                f"This person is {'not ' if wanted else ''}in the segment {name!r}.",
            )


async def _refusal(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile_id: uuid.UUID,
    known: tuple[Sequence[Enrolment], consent.Current],
    rules: ScoringRules,
    now: datetime,
) -> EntryRefused | None:
    """Why this person may not enter now, segments included; None if nothing stops them.
    `known` is their earlier enrolments in the sequence (newest first) and consent."""
    earlier, consent_now = known
    refused = entry_refusal(sequence, earlier, consent_now, now)
    if refused is None:
        try:
            await _check_segments(session, sequence, profile_id, rules, now)
        except EntryRefused as not_in_segments:
            refused = not_in_segments
    return refused


async def check_entry(
    session: AsyncSession,
    sequence: SequenceDefinition,
    profile: Profile,
    rules: ScoringRules,
    clock: Clock,
) -> None:
    """Raises EntryRefused unless this person may enter the sequence now."""
    earlier = await _earlier(session, [sequence.name], [profile.id])
    consent_now = (await consent.current_of(session, [profile.id]))[profile.id]
    known = (earlier.get((sequence.name, profile.id), []), consent_now)
    refused = await _refusal(session, sequence, profile.id, known, rules, clock.now())
    if refused is not None:
        raise refused


async def _earlier(
    session: AsyncSession, sequences: Iterable[str], profile_ids: Iterable[uuid.UUID]
) -> dict[tuple[str, uuid.UUID], list[Enrolment]]:
    """These people's enrolments in these sequences, newest first, in one query."""
    found: dict[tuple[str, uuid.UUID], list[Enrolment]] = {}
    rows = await session.scalars(
        select(Enrolment)
        .where(
            Enrolment.sequence.in_(set(sequences)),
            bulk.one_of(session, Enrolment.profile_id, set(profile_ids)),
        )
        .order_by(Enrolment.updated_at.desc())
    )
    for enrolment in rows:
        found.setdefault((enrolment.sequence, enrolment.profile_id), []).append(enrolment)
    return found


def _new_enrolment(
    sequence: SequenceDefinition, profile_id: uuid.UUID, event: TriggerEvent, now: datetime
) -> Enrolment:
    return Enrolment(
        id=uuid.uuid4(),
        sequence=sequence.name,
        profile_id=profile_id,
        status=ACTIVE,
        current_step=sequence.steps[0].id,
        trigger_type=event.type,
        trigger_properties=dict(event.properties),
        variants={},
        enrolled_at=now,
        updated_at=now,
    )


async def _insert(session: AsyncSession, enrolments: Sequence[Enrolment]) -> None:
    """Enrolments and their first steps, due at once, in one savepoint. Raises
    IntegrityError if another request enrolled one of these people at the same moment."""
    async with session.begin_nested():
        session.add_all(enrolments)
        await session.flush()
        session.add_all(
            SequenceWork(enrolment_id=e.id, step=e.current_step, due_at=e.enrolled_at, attempt=1)
            for e in enrolments
        )
        await session.flush()


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
    enrolment = _new_enrolment(sequence, profile.id, event, clock.now())
    try:
        await _insert(session, [enrolment])
    except IntegrityError as error:
        # The same person enrolled at the same moment by another request.
        raise EntryRefused("already-enrolled", "This person is in the sequence already.") from error
    log.info("sequence.enrolled", sequence=sequence.name, profile_id=str(profile.id))
    return enrolment


class RecordedEvent(NamedTuple):
    """A newly stored event (a tuple: a batch makes a thousand of them)."""

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
    if _event_type_of(trigger) != event_type:
        return False
    match trigger:
        case EventTrigger(where=where):
            return matches(where, properties)
        case IntentTrigger(intent=wanted):
            return _intent_matches(wanted, properties.get("intent"))
        case FormCompletedTrigger(form_completed=wanted):
            return properties.get("form") == wanted
    return False


def _event_type_of(trigger: Trigger) -> str | None:
    """The only event type that can meet `trigger`; None for triggers no event meets."""
    match trigger:
        case EventTrigger(event=wanted):
            return wanted
        case IntentTrigger():
            return INTENT_EXPRESSED
        case FormCompletedTrigger():
            return FORM_COMPLETED
    return None


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
        _log_refusal(sequence, profile.id, refused, event)
        return None


def _log_refusal(
    sequence: SequenceDefinition, profile_id: uuid.UUID, refused: EntryRefused, event: TriggerEvent
) -> None:
    log.info(
        "sequence.entry_refused", sequence=sequence.name,
        profile_id=str(profile_id), reason=refused.kind, trigger=event.type,
    )  # fmt: skip


async def enrol_on_events(
    session: AsyncSession,
    sequences: Sequence[SequenceDefinition],
    recorded: Iterable[RecordedEvent],
    clock: Clock,
    rules: ScoringRules,
) -> list[Enrolment]:
    """Enrol each event's person into every sequence whose trigger the event matches (an
    event trigger, or an intent or form trigger for the bot's `intent_expressed` and
    `form_completed`); people the entry conditions refuse are left out (and logged).

    A batch is decided together: the people, their earlier enrolments and their consent
    are read in one query each, and the enrolments written in one savepoint, where one
    `enrol` per event took a query per condition (a batch of 1,000 events spent 80 % of
    its time there). The conditions are `enrol`'s (`entry_refusal`); a person triggered
    twice in one batch is enrolled once."""
    by_type: dict[str, list[SequenceDefinition]] = {}
    for sequence in sequences:
        if (needed := _event_type_of(sequence.trigger)) is not None:
            by_type.setdefault(needed, []).append(sequence)
    wanted = [
        (event, sequence)
        for event in recorded
        for sequence in by_type.get(event.type, ())
        if triggered_by(sequence.trigger, event.type, event.properties)
    ]
    if not wanted:
        return []
    now = clock.now()
    ids = {event.profile_id for event, _ in wanted}
    live = set(
        await session.scalars(select(Profile.id).where(bulk.one_of(session, Profile.id, ids)))
    )
    earlier = await _earlier(session, {s.name for _, s in wanted}, live)
    consent_now = await consent.current_of(session, live)
    made: list[tuple[Enrolment, SequenceDefinition, TriggerEvent]] = []
    for event, sequence in wanted:
        if event.profile_id not in live:
            continue
        trigger = TriggerEvent(event.type, event.properties)
        key = (sequence.name, event.profile_id)
        known = (earlier.get(key, []), consent_now[event.profile_id])
        refused = await _refusal(session, sequence, event.profile_id, known, rules, now)
        if refused is not None:
            _log_refusal(sequence, event.profile_id, refused, trigger)
            continue
        enrolment = _new_enrolment(sequence, event.profile_id, trigger, now)
        earlier.setdefault(key, []).insert(0, enrolment)  # the next event finds them in
        made.append((enrolment, sequence, trigger))
    if not made:
        return []
    try:
        await _insert(session, [enrolment for enrolment, _, _ in made])
    except IntegrityError:
        # Someone else enrolled one of them at the same moment: one at a time, to keep
        # the others.
        kept = []
        for enrolment, sequence, trigger in made:
            try:
                await _insert(session, [enrolment])
            except IntegrityError:
                raced = EntryRefused("already-enrolled", "This person is in it already.")
                _log_refusal(sequence, enrolment.profile_id, raced, trigger)
                continue
            kept.append((enrolment, sequence, trigger))
        made = kept
    for enrolment, sequence, _ in made:
        log.info("sequence.enrolled", sequence=sequence.name, profile_id=str(enrolment.profile_id))
    return [enrolment for enrolment, _, _ in made]
