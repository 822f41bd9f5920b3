"""Lead scoring: points for what people do (events, decaying) and who they are (attributes).

Rules live in data/scoring.yml. Event points halve every `half_life_days`. To keep
decay out of every row and every query, event points are stored scaled to a fixed
epoch: an event worth p points at time t is stored as p * 2^((t - EPOCH) / h), and
today's score is the stored sum times 2^(-(now - EPOCH) / h), one factor for every
profile. So a segment's `score >= 50` stays a plain comparison on two columns, and a
profile's score never needs rewriting just because time passed.

Attribute points are plain (they hold while the condition holds) and are recomputed
with one query whenever a profile changes.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, NamedTuple, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import Table, bindparam, case, delete, literal, select, update
from sqlalchemy.dialects.postgresql import Insert as PostgresqlInsert
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import Insert as SqliteInsert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import bulk
from backend.core.models import Event, Profile, ScoreContribution, ScoringState
from backend.segments.rules import (
    AllOf,
    AnyOf,
    Context,
    EventCondition,
    NotOf,
    Rule,
    Scalar,
    where_clause,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# A sequence's `update: {add_points: N}` is stored as an event of this type (properties
# sequence, step, points), so its points decay like any event's and survive a rebuild.
SEQUENCE_POINTS = "sequence_points"
RuleName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")]


class EventRule(BaseModel):
    """Points each time a person does something (optionally only with these properties)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName
    event: Annotated[str, Field(min_length=1, max_length=64)]
    where: dict[str, Scalar] = Field(default_factory=dict)
    points: Annotated[float, Field(ge=-1000, le=1000)]

    def matches(self, event_type: str, properties: Mapping[str, Any]) -> bool:
        return event_type == self.event and self.holds_for(properties)

    def holds_for(self, properties: Mapping[str, Any]) -> bool:
        """Whether an event of this rule's type, with these properties, earns its points."""
        return all(_same(properties.get(key), value) for key, value in self.where.items())


def _same(found: Any, wanted: Any) -> bool:
    """Equal and of the same JSON type (Python's True == 1 is not JSON's), as in SQL."""
    if isinstance(wanted, bool) or isinstance(found, bool):
        return found is wanted
    if isinstance(wanted, int | float):
        return isinstance(found, int | float) and found == wanted
    return isinstance(found, str) and found == wanted


class AttributeRule(BaseModel):
    """Points while a profile meets a condition (the segment rule language, minus events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: RuleName
    when: Rule
    points: Annotated[float, Field(ge=-1000, le=1000)]

    @model_validator(mode="after")
    def _no_events(self) -> AttributeRule:
        if _mentions_events(self.when):
            raise ValueError(
                "attribute rules cannot test events: score events under 'events:' instead"
            )
        return self


def _mentions_events(rule: Rule) -> bool:
    match rule:
        case EventCondition():
            return True
        case AllOf(all=parts) | AnyOf(any=parts):
            return any(_mentions_events(p) for p in parts)
        case NotOf(not_=part):
            return _mentions_events(part)
    return False


class ScoringRules(BaseModel):
    """The whole of data/scoring.yml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    half_life_days: Annotated[float, Field(ge=7, le=3650)] = 30
    events: list[EventRule] = Field(default_factory=list)
    attributes: list[AttributeRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ScoringRules:
        seen: set[str] = set()
        every: list[EventRule | AttributeRule] = [*self.events, *self.attributes]
        for rule in every:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}: names must be unique")
            seen.add(rule.name)
        return self

    @cached_property
    def events_by_type(self) -> dict[str, list[EventRule]]:
        """The event rules of each event type: a batch of events looks up its own."""
        by_type: dict[str, list[EventRule]] = defaultdict(list)
        for rule in self.events:
            by_type[rule.event].append(rule)
        return dict(by_type)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def factor(self, now: datetime) -> float:
        """Today's multiplier from stored (epoch-scaled) event points to points."""
        return float(2.0 ** (-(now - EPOCH).total_seconds() / 86400 / self.half_life_days))

    def scaled(self, points: float, at: datetime) -> float:
        return points * self.growth(at)

    def growth(self, at: datetime) -> float:
        """What a point earned at `at` is stored as (epoch-scaled)."""
        return float(2.0 ** ((at - EPOCH).total_seconds() / 86400 / self.half_life_days))

    def context(self, now: datetime) -> Context:
        return Context(now=now, score_factor=self.factor(now))

    def rule_kinds(self) -> dict[str, str]:
        return {r.name: "event" for r in self.events} | {
            r.name: "attribute" for r in self.attributes
        }


def load(path: Path) -> ScoringRules:
    """Rules from a YAML file; no file means no rules. Errors: see backend.data_files."""
    if not path.exists():
        return ScoringRules()
    return ScoringRules.model_validate(yaml.safe_load(path.read_text()) or {})


def current_score(profile: Profile, rules: ScoringRules, now: datetime) -> float:
    return round(profile.score_events * rules.factor(now) + profile.score_attributes, 4)


# --------------------------------------------------------------------------- writing


class Scored(NamedTuple):
    """An event to score: who, what, when. (A tuple: a batch makes a thousand of them.)"""

    profile_id: uuid.UUID
    type: str
    properties: Mapping[str, Any]
    occurred_at: datetime


def _earned(rules: ScoringRules, event: Scored) -> Iterable[tuple[str, float]]:
    """(rule, points) for each rule the event meets; a sequence's points are its own."""
    if event.type == SEQUENCE_POINTS:
        points = event.properties.get("points")
        if isinstance(points, int | float):
            yield f"sequence:{event.properties.get('sequence')}"[:64], float(points)
        return
    for rule in rules.events_by_type.get(event.type, ()):
        if rule.holds_for(event.properties):
            yield rule.name, rule.points


async def apply_events(
    session: AsyncSession, rules: ScoringRules, events: Iterable[Scored]
) -> None:
    """Add the points these (newly stored) events earn to their profiles."""
    deltas: dict[tuple[uuid.UUID, str], tuple[float, int, datetime]] = {}
    totals: dict[uuid.UUID, float] = defaultdict(float)
    growth: dict[datetime, float] = {}  # most of a batch shares a moment
    for event in events:
        for name, earned in _earned(rules, event):
            at = event.occurred_at
            if at not in growth:
                growth[at] = rules.growth(at)
            points = earned * growth[at]
            key = (event.profile_id, name)
            before = deltas.get(key, (0.0, 0, at))
            deltas[key] = (before[0] + points, before[1] + 1, max(before[2], at))
            totals[event.profile_id] += points
    if not deltas:
        return
    await _add_to_scores(session, sorted(totals.items()))
    await _add_contributions(
        session,
        [
            {"profile_id": pid, "rule": rule, "points": pts, "count": n, "last_at": last}
            for (pid, rule), (pts, n, last) in sorted(deltas.items())
        ],
    )


async def _add_to_scores(session: AsyncSession, deltas: Sequence[tuple[uuid.UUID, float]]) -> None:
    """Add each delta to its profile's event score; `deltas` in profile id order, the
    order every batch locks profiles in, so two batches that share people wait for each
    other instead of deadlocking."""
    profiles = cast(Table, Profile.__table__)
    if not bulk.on_postgresql(session):
        await session.execute(
            profiles.update()
            .where(profiles.c.id == bindparam("pid"))
            .values(score_events=profiles.c.score_events + bindparam("delta")),
            [{"pid": pid, "delta": delta} for pid, delta in deltas],
        )
        return
    # An UPDATE … FROM follows whichever join PostgreSQL picks, so lock in order first.
    await session.execute(
        select(profiles.c.id)
        .where(bulk.one_of(session, profiles.c.id, [pid for pid, _ in deltas]))
        .order_by(profiles.c.id)
        .with_for_update(key_share=True)
    )
    source = bulk.rows(
        profiles, ["id", "score_events"], [{"id": p, "score_events": d} for p, d in deltas]
    )
    await session.execute(
        profiles.update()
        .where(profiles.c.id == source.c.id)
        .values(score_events=profiles.c.score_events + source.c.score_events)
    )


async def _add_contributions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Upsert contributions, adding to those already there; `rows` in (profile, rule)
    order, one row per pair, at least one."""
    params: list[dict[str, Any]] | None = None
    statement: PostgresqlInsert | SqliteInsert
    if bulk.on_postgresql(session):
        table = cast(Table, ScoreContribution.__table__)
        statement = bulk.from_rows(postgresql_insert(table), table, rows)
    else:
        statement, params = sqlite_insert(ScoreContribution), list(rows)
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=[ScoreContribution.profile_id, ScoreContribution.rule],
        set_={
            "points": ScoreContribution.points + excluded.points,
            "count": ScoreContribution.count + excluded.count,
            "last_at": case(
                (ScoreContribution.last_at.is_(None), excluded.last_at),
                (excluded.last_at > ScoreContribution.last_at, excluded.last_at),
                else_=ScoreContribution.last_at,
            ),
        },
    )
    await session.execute(statement, params)


async def refresh_attributes(
    session: AsyncSession,
    rules: ScoringRules,
    profile_ids: Sequence[uuid.UUID],
    now: datetime,
    new: bool = False,
) -> dict[uuid.UUID, float]:
    """Recompute attribute points for these profiles, with one query to find who meets
    what; their new attribute scores. `new`: the profiles were created in this
    transaction, so no attribute points of theirs are stored yet."""
    names = [r.name for r in rules.attributes]
    if names and not new:
        await session.execute(
            delete(ScoreContribution).where(
                ScoreContribution.profile_id.in_(profile_ids), ScoreContribution.rule.in_(names)
            )
        )
    context = rules.context(now).for_one_profile()
    columns = [
        case((where_clause(rule.when, context), 1), else_=0).label(f"r{i}")
        for i, rule in enumerate(rules.attributes)
    ]
    result = await session.execute(
        select(Profile.id, Profile.score_attributes, *columns).where(Profile.id.in_(profile_ids))
    )
    totals: dict[uuid.UUID, float] = {}
    rows: list[dict[str, Any]] = []
    for profile_id, stored, *hits in result:
        total = 0.0
        for rule, hit in zip(rules.attributes, hits, strict=True):
            if hit:
                total += rule.points
                rows.append(
                    {
                        "profile_id": profile_id,
                        "rule": rule.name,
                        "points": rule.points,
                        "count": 1,
                        "last_at": None,
                    }
                )
        totals[profile_id] = total
        if total != stored:
            await session.execute(
                update(Profile).where(Profile.id == profile_id).values(score_attributes=total)
            )
    if rows:
        await _add_contributions(session, rows)
    return totals


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Reason:
    rule: str
    kind: str  # event or attribute
    points: float  # what it adds today
    count: int  # how many events earned it (1 for attribute rules)
    last_at: datetime | None


async def explain(
    session: AsyncSession, rules: ScoringRules, profile_id: uuid.UUID, now: datetime
) -> list[Reason]:
    """The rules behind a profile's score, biggest first."""
    factor = rules.factor(now)
    result = list(
        await session.scalars(
            select(ScoreContribution).where(ScoreContribution.profile_id == profile_id)
        )
    )
    kinds = rules.rule_kinds() | {c.rule: "event" for c in result if c.rule.startswith("sequence:")}
    reasons = [
        Reason(
            rule=c.rule,
            kind=kinds.get(c.rule, "retired"),
            points=round(c.points * factor if kinds.get(c.rule) == "event" else c.points, 4),
            count=c.count,
            last_at=c.last_at,
        )
        for c in result
        if c.rule in kinds
    ]
    return sorted(reasons, key=lambda r: (-abs(r.points), r.rule))


# --------------------------------------------------------------------------- rebuilding


async def ensure_current(session: AsyncSession, rules: ScoringRules, now: datetime) -> bool:
    """Rescore everyone if the rules changed since scores were computed; True if it did."""
    state = await session.get(ScoringState, 1)
    if state is not None and state.rules_fingerprint == rules.fingerprint:
        return False
    await rebuild(session, rules, now)
    await record_current(session, rules, now)
    return True


async def record_current(session: AsyncSession, rules: ScoringRules, now: datetime) -> None:
    """Note that the stored scores follow these rules."""
    state = await session.get(ScoringState, 1)
    if state is None:
        session.add(ScoringState(id=1, rules_fingerprint=rules.fingerprint, rebuilt_at=now))
    else:
        state.rules_fingerprint = rules.fingerprint
        state.rebuilt_at = now
    await session.flush()


async def rebuild(
    session: AsyncSession, rules: ScoringRules, now: datetime, batch: int = 5000
) -> None:
    """Recompute every score from the events and the profiles, from scratch."""
    await session.execute(delete(ScoreContribution))
    await session.execute(update(Profile).values(score_events=0.0, score_attributes=0.0))
    types = sorted({r.event for r in rules.events} | {SEQUENCE_POINTS})
    if types:
        last_id = 0
        while True:
            chunk = (
                await session.execute(
                    select(
                        Event.id, Event.profile_id, Event.type, Event.properties, Event.occurred_at
                    )
                    .where(Event.type.in_(types), Event.id > last_id)
                    .order_by(Event.id)
                    .limit(batch)
                )
            ).all()
            if not chunk:
                break
            last_id = chunk[-1].id
            await apply_events(
                session,
                rules,
                (Scored(r.profile_id, r.type, r.properties, r.occurred_at) for r in chunk),
            )
    await rescore_attributes(session, rules, now)


async def rescore_attributes(session: AsyncSession, rules: ScoringRules, now: datetime) -> None:
    """Every profile's attribute points, in one UPDATE and one INSERT per rule."""
    if rules.attributes:
        context = rules.context(now)
        total = sum(
            (case((where_clause(r.when, context), r.points), else_=0.0) for r in rules.attributes),
            start=0.0,
        )
        await session.execute(update(Profile).values(score_attributes=total))
        for rule in rules.attributes:
            matching = select(
                Profile.id, literal(rule.name), literal(rule.points), literal(1), literal(None)
            ).where(where_clause(rule.when, context))
            await session.execute(
                ScoreContribution.__table__.insert().from_select(  # type: ignore[attr-defined]
                    ["profile_id", "rule", "points", "count", "last_at"], matching
                )
            )
