"""Sequence results: what a follow-up sequence did, for the people it enrolled.

For the whole sequence, each send step, and each arm of a step (a variant, or the
holdout who got nothing): how many people were enrolled or assigned, sent a text, had it
delivered, replied, reached the sequence's goal and opted out; for each variant, its lift
over the holdout (the difference of goal rates, with a 95% interval, backend.sequences.lift).
docs/sequences.md ("Results") defines each figure.

Every figure is counted by the database (one aggregate query for the sequence and one
per send step, correlated EXISTS probes on indexed columns), so a sequence with 100,000
enrolments is never loaded into Python. The SQL runs on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVarTuple, Unpack

from sqlalchemy import ColumnElement, Select, and_, case, exists, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from backend.core.json_sql import json_bool, json_null, json_number, json_text
from backend.core.models import ConsentEvent, Enrolment, Event, Message, Profile, SequenceWork
from backend.segments.rules import Scalar
from backend.sequences.definition import GoalEvent, SendStep, SequenceDefinition
from backend.sequences.enrolment import ACTIVE, COMPLETED, EXITED
from backend.sequences.lift import Z_95, Lift, difference_interval

CONFIDENCE = 0.95  # of the lift intervals (Z_95)
HOLDOUT = "holdout"
VARIANT = "variant"
# Message statuses: "failed" never left; these reached the phone.
FAILED = "failed"
DELIVERED = ("delivered", "read")
# Ledger lines that take a person's SMS marketing consent away.
OPT_OUT_CHANNELS = ("sms", "all")


@dataclass(frozen=True)
class ArmResults:
    """One arm of a send step: a variant (its name) or the holdout."""

    name: str
    kind: str  # variant or holdout
    # The part of the people reaching the step the file sends to this arm; None for an
    # arm no longer in the file (a variant renamed or removed since people got it).
    share: float | None
    assigned: int
    sent: int
    delivered: int
    replied: int
    goal_reached: int | None  # None: the sequence names no goal
    opted_out: int
    goal_rate: float | None
    lift: Lift | None


@dataclass(frozen=True)
class StepResults:
    id: str
    holdout: float
    assigned: int
    sent: int
    delivered: int
    replied: int
    goal_reached: int | None
    opted_out: int
    arms: list[ArmResults]


@dataclass(frozen=True)
class CountedTotals:
    enrolled: int
    active: int
    completed: int
    exited: int
    exited_by_reason: dict[str, int]
    sent: int
    delivered: int
    replied: int
    goal_reached: int | None
    opted_out: int
    goal_rate: float | None


@dataclass(frozen=True)
class SequenceResults:
    sequence: str
    since: datetime | None
    goals: list[str]
    confidence: float
    totals: CountedTotals
    steps: list[StepResults]


# -------------------------------------------------------------------- the SQL pieces

_outbound = aliased(Message, name="outbound")
_inbound = aliased(Message, name="inbound")


def property_equals(column: Any, key: str, wanted: Scalar) -> ColumnElement[bool]:
    """SQL for one `where` entry, as backend.sequences.enrolment.matches reads it: the property is
    there and equals `wanted`, or reads the same as text ("10" matches 10, "True"
    matches true). One difference: a number written as text compares by value, so
    "10.0" matches 10 here and not there."""
    if isinstance(wanted, bool):
        return or_(
            json_bool(column, key) == wanted,
            json_number(column, key) == int(wanted),
            json_text(column, key) == str(wanted),
        )
    if isinstance(wanted, int | float):
        options = [json_number(column, key) == wanted, json_text(column, key) == str(wanted)]
        if wanted in (0, 1):
            options.append(json_bool(column, key) == bool(wanted))
        return or_(*options)
    options = [json_text(column, key) == wanted]
    if wanted in ("True", "False"):
        options.append(json_bool(column, key) == (wanted == "True"))
    number = _number(wanted)
    if number is not None:
        options.append(json_number(column, key) == number)
    return or_(*options)


def _number(text: str) -> float | None:
    """The number `text` is the Python rendering of ("10", "2.5"), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None  # JSON has no infinities
    if text == str(value) or (value.is_integer() and text == str(int(value))):
        return value
    return None


def goal_filter(goals: list[GoalEvent], properties: Any, type_: Any) -> ColumnElement[bool]:
    """An event (its type and properties columns) that counts as reaching a goal."""
    return or_(
        false(),
        *(
            and_(
                type_ == goal.event,
                *(property_equals(properties, k, v) for k, v in goal.where.items()),
            )
            for goal in goals
        ),
    )


def _person() -> ColumnElement[Any]:
    # A merged person's events and consent moved to the profile they were merged into.
    return func.coalesce(Profile.merged_into_id, Enrolment.profile_id)


def _flag(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return case((condition, 1), else_=0)


def _sent(step: str | None, statuses: tuple[str, ...] | None = None) -> ColumnElement[bool]:
    """The enrolment has a text for `step` (any step: None) that left, or that reached
    the phone when `statuses` are given. Only part 1 of a long text counts."""
    query = exists().where(
        _outbound.enrolment_id == Enrolment.id,
        _outbound.direction == "outbound",
        _outbound.part == 1,
        _outbound.status != FAILED,
    )
    if step is not None:
        query = query.where(_outbound.sequence_step == step)
    if statuses is not None:
        query = query.where(_outbound.status.in_(statuses))
    return query


def _goal(goals: list[GoalEvent]) -> ColumnElement[int]:
    """1 when a goal event was received after enrolling (always 0 without goals)."""
    if not goals:
        return _flag(false())
    return _flag(
        exists().where(
            Event.profile_id == _person(),
            Event.received_at >= Enrolment.enrolled_at,
            goal_filter(goals, Event.properties, Event.type),
        )
    )


def _opted_out() -> ColumnElement[bool]:
    return exists().where(
        ConsentEvent.profile_id == _person(),
        ConsentEvent.action == "withdraw",
        ConsentEvent.purpose == "marketing",
        ConsentEvent.channel.in_(OPT_OUT_CHANNELS),
        ConsentEvent.occurred_at >= Enrolment.enrolled_at,
    )


def _replied(profile_id: Any, person: Any, since: Any) -> ColumnElement[bool]:
    """A message from the person (keywords such as STOP are not replies) at or after
    `since`."""
    return exists().where(
        or_(_inbound.profile_id == profile_id, _inbound.profile_id == person),
        _inbound.direction == "inbound",
        _inbound.keyword.is_(None),
        _inbound.created_at >= since,
    )


Columns = TypeVarTuple("Columns")


def _enrolments(
    query: Select[Unpack[Columns]], sequence: str, since: datetime | None
) -> Select[Unpack[Columns]]:
    """`query` over the sequence's enrolments (with their profiles), enrolled since."""
    query = query.select_from(Enrolment).join(Profile, Profile.id == Enrolment.profile_id)
    query = query.where(Enrolment.sequence == sequence)
    return query if since is None else query.where(Enrolment.enrolled_at >= since)


# ----------------------------------------------------------------------------- counting


async def results(
    session: AsyncSession, sequence: SequenceDefinition, since: datetime | None = None
) -> SequenceResults:
    """The sequence's results for the people enrolled at or after `since` (everyone:
    None)."""
    goals = sequence.exit_when.goal
    totals = await _totals(session, sequence, since)
    steps = [
        await _step(session, sequence, step, since)
        for step in sequence.steps
        if isinstance(step, SendStep)
    ]
    return SequenceResults(
        sequence=sequence.name,
        since=since,
        goals=[goal.event for goal in goals],
        confidence=CONFIDENCE,
        totals=totals,
        steps=steps,
    )


async def _totals(
    session: AsyncSession, sequence: SequenceDefinition, since: datetime | None
) -> CountedTotals:
    goals = sequence.exit_when.goal
    per_enrolment = _enrolments(
        select(
            Enrolment.status,
            Enrolment.exit_reason,
            _flag(_sent(None)).label("sent"),
            _flag(_sent(None, DELIVERED)).label("delivered"),
            _flag(_replied(Enrolment.profile_id, _person(), Enrolment.enrolled_at)).label(
                "replied"
            ),
            _goal(goals).label("goal"),
            _flag(_opted_out()).label("opted_out"),
        ),
        sequence.name,
        since,
    ).subquery()
    e = per_enrolment.c
    rows = await session.execute(
        select(
            e.status,
            e.exit_reason,
            func.count(),
            func.sum(e.sent),
            func.sum(e.delivered),
            func.sum(e.replied),
            func.sum(e.goal),
            func.sum(e.opted_out),
        ).group_by(e.status, e.exit_reason)
    )
    by_status: dict[str, int] = {}
    exited_by_reason: dict[str, int] = {}
    sums = [0] * 5
    for status, reason, count, *figures in rows:
        by_status[status] = by_status.get(status, 0) + count
        if status == EXITED:
            key = reason or "unknown"
            exited_by_reason[key] = exited_by_reason.get(key, 0) + count
        sums = [total + int(value or 0) for total, value in zip(sums, figures, strict=True)]
    enrolled = sum(by_status.values())
    sent, delivered, replied, goal_reached, opted_out = sums
    return CountedTotals(
        enrolled=enrolled,
        active=by_status.get(ACTIVE, 0),
        completed=by_status.get(COMPLETED, 0),
        exited=by_status.get(EXITED, 0),
        exited_by_reason=dict(sorted(exited_by_reason.items())),
        sent=sent,
        delivered=delivered,
        replied=replied,
        goal_reached=goal_reached if goals else None,
        opted_out=opted_out,
        goal_rate=(goal_reached / enrolled if enrolled else None) if goals else None,
    )


@dataclass
class _Counts:
    assigned: int = 0
    sent: int = 0
    delivered: int = 0
    replied: int = 0
    goal_reached: int = 0
    opted_out: int = 0


async def _step(
    session: AsyncSession, sequence: SequenceDefinition, step: SendStep, since: datetime | None
) -> StepResults:
    goals = sequence.exit_when.goal
    held = json_null(Enrolment.variants, step.id)
    variant = json_text(Enrolment.variants, step.id)
    first_sent = (
        select(func.min(_outbound.created_at))
        .where(
            _outbound.enrolment_id == Enrolment.id,
            _outbound.sequence_step == step.id,
            _outbound.direction == "outbound",
            _outbound.part == 1,
            _outbound.status != FAILED,
        )
        .scalar_subquery()
    )
    held_out_at = (
        select(func.min(SequenceWork.done_at))
        .where(
            SequenceWork.enrolment_id == Enrolment.id,
            SequenceWork.step == step.id,
            SequenceWork.outcome == "held_out",
        )
        .scalar_subquery()
    )
    per_enrolment = _enrolments(
        select(
            _flag(held).label("held"),
            variant.label("variant"),
            Enrolment.profile_id.label("profile_id"),
            _person().label("person"),
            first_sent.label("sent_at"),
            held_out_at.label("held_at"),
            _flag(_sent(step.id, DELIVERED)).label("delivered"),
            _goal(goals).label("goal"),
            _flag(_opted_out()).label("opted_out"),
        ),
        sequence.name,
        since,
    ).where(or_(held, variant.is_not(None)))
    e = per_enrolment.subquery().c
    # When the person reached the step: their text for it, or (holdout) the step's run.
    reached = func.coalesce(e.sent_at, e.held_at)
    rows = await session.execute(
        select(
            e.held,
            e.variant,
            func.count(),
            func.sum(_flag(e.sent_at.is_not(None))),
            func.sum(e.delivered),
            func.sum(_flag(_replied(e.profile_id, e.person, reached))),
            func.sum(e.goal),
            func.sum(e.opted_out),
        ).group_by(e.held, e.variant)
    )
    counted: dict[tuple[str, str], _Counts] = {}
    for held_flag, name, *figures in rows:
        key = (HOLDOUT, HOLDOUT) if held_flag else (VARIANT, str(name))
        counted[key] = _Counts(*(int(value or 0) for value in figures))
    return _step_results(step, counted, bool(goals))


def _step_results(
    step: SendStep, counted: Mapping[tuple[str, str], _Counts], has_goal: bool
) -> StepResults:
    message = step.send
    weights = sum(v.weight for v in message.choices)
    shares: dict[tuple[str, str], float | None] = {
        (VARIANT, v.name): (1 - message.holdout) * v.weight / weights for v in message.choices
    }
    if message.holdout > 0:
        shares[(HOLDOUT, HOLDOUT)] = message.holdout
    keys = list(shares) + sorted(k for k in counted if k not in shares)
    control = counted.get((HOLDOUT, HOLDOUT))
    arms: list[ArmResults] = []
    for kind, name in keys:
        counts = counted.get((kind, name), _Counts())
        lift = None
        if (
            has_goal
            and kind == VARIANT
            and control is not None
            and control.assigned
            and counts.assigned
        ):
            lift = difference_interval(
                counts.goal_reached, counts.assigned, control.goal_reached, control.assigned, Z_95
            )
        arms.append(
            ArmResults(
                name=name,
                kind=kind,
                share=shares.get((kind, name)),
                assigned=counts.assigned,
                sent=counts.sent,
                delivered=counts.delivered,
                replied=counts.replied,
                goal_reached=counts.goal_reached if has_goal else None,
                opted_out=counts.opted_out,
                goal_rate=(
                    counts.goal_reached / counts.assigned if has_goal and counts.assigned else None
                ),
                lift=lift,
            )
        )
    every = list(counted.values())
    return StepResults(
        id=step.id,
        holdout=message.holdout,
        assigned=sum(c.assigned for c in every),
        sent=sum(c.sent for c in every),
        delivered=sum(c.delivered for c in every),
        replied=sum(c.replied for c in every),
        goal_reached=sum(c.goal_reached for c in every) if has_goal else None,
        opted_out=sum(c.opted_out for c in every),
        arms=arms,
    )
