"""Segments: rule trees over profiles, compiled to one SQL query.

A rule is `all` / `any` / `not` over conditions:
- `{field: <core field, score, created_at, updated_at or attributes.<key>>, op: ..., value: ...}`
- `{identity: sms}`: has an identity of that kind
- `{consent: sms, purpose: marketing, state: granted}`: consent state (see backend.consent.ledger)
- `{event: trial_started, at_least: 2, within_days: 14, where: {plan: pro}}`: did it N times

The same rule language serves data/segments/*.yml, the API and the attribute rules of
data/scoring.yml. Nothing is ever filtered in Python: `where_clause` gives SQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    model_validator,
)
from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select, true
from sqlalchemy.sql.elements import ColumnElement as Column

from backend.consent.ledger import CONCRETE_CHANNELS, Channel, Purpose, State
from backend.core.identities import IdentityKind
from backend.core.json_sql import json_bool, json_number, json_present, json_text
from backend.core.models import ConsentState, Event, Identity, Profile

STRING_FIELDS = ("first_name", "last_name", "email", "phone", "locale", "timezone", "company")
TIME_FIELDS = ("created_at", "updated_at")
NUMBER_FIELDS = ("score",)
KNOWN_FIELDS = (*STRING_FIELDS, *NUMBER_FIELDS, *TIME_FIELDS)
ATTRIBUTE = re.compile(r"^attributes\.([A-Za-z0-9_\-]{1,64})$")

Scalar = StrictStr | StrictBool | StrictInt | StrictFloat


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    STARTS_WITH = "starts_with"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    EXISTS = "exists"
    WITHIN_DAYS = "within_days"
    OLDER_THAN_DAYS = "older_than_days"


STRING_OPS = {Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.CONTAINS, Op.STARTS_WITH, Op.EXISTS}
NUMBER_OPS = {Op.EQ, Op.NE, Op.IN, Op.NOT_IN, Op.GT, Op.GTE, Op.LT, Op.LTE, Op.EXISTS}
TIME_OPS = {Op.WITHIN_DAYS, Op.OLDER_THAN_DAYS}
BOOL_OPS = {Op.EQ, Op.NE, Op.EXISTS}


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldCondition(_Rule):
    field: str = Field(
        description="a core field, score, created_at, updated_at or attributes.<key>"
    )
    op: Op
    value: Scalar | list[Scalar] | None = None

    @model_validator(mode="after")
    def _fits(self) -> FieldCondition:
        _check_field_condition(self)
        return self


class IdentityCondition(_Rule):
    identity: IdentityKind


class ConsentCondition(_Rule):
    consent: Channel
    purpose: Purpose = Purpose.MARKETING
    state: State = State.GRANTED

    @model_validator(mode="after")
    def _one_channel(self) -> ConsentCondition:
        if self.consent is Channel.ALL:
            raise ValueError("consent conditions name one channel: sms, voice, email or web")
        return self


class EventCondition(_Rule):
    event: Annotated[str, Field(min_length=1, max_length=64)]
    at_least: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    within_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    where: dict[Annotated[str, Field(min_length=1, max_length=64)], Scalar] = Field(
        default_factory=dict, max_length=10
    )


class AllOf(_Rule):
    all: Annotated[list[Rule], Field(min_length=1, max_length=50)]


class AnyOf(_Rule):
    any: Annotated[list[Rule], Field(min_length=1, max_length=50)]


class NotOf(_Rule):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    not_: Rule = Field(alias="not")


# Tags start with "~" so that error locations can leave them out (see `error_path`).
KINDS = {
    "all": "~all",
    "any": "~any",
    "not": "~not",
    "field": "~field",
    "identity": "~identity",
    "consent": "~consent",
    "event": "~event",
}
_BY_TYPE: dict[type[BaseModel], str] = {}


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, tag in KINDS.items():
            if key in value:
                return tag
        return None
    return _BY_TYPE.get(type(value))


Rule = Annotated[
    Annotated[AllOf, Tag("~all")]
    | Annotated[AnyOf, Tag("~any")]
    | Annotated[NotOf, Tag("~not")]
    | Annotated[FieldCondition, Tag("~field")]
    | Annotated[IdentityCondition, Tag("~identity")]
    | Annotated[ConsentCondition, Tag("~consent")]
    | Annotated[EventCondition, Tag("~event")],
    Discriminator(
        _kind,
        custom_error_type="invalid_rule",
        custom_error_message=(
            "a rule is an object with one of the keys: all, any, not, field, identity, "
            "consent, event"
        ),
    ),
]

for _model, _tag in (
    (AllOf, "~all"),
    (AnyOf, "~any"),
    (NotOf, "~not"),
    (FieldCondition, "~field"),
    (IdentityCondition, "~identity"),
    (ConsentCondition, "~consent"),
    (EventCondition, "~event"),
):
    _BY_TYPE[_model] = _tag
    _model.model_rebuild()


def error_path(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """A pydantic error location without the union tags, e.g. ('all', 0, 'op')."""
    return tuple(part for part in loc if not (isinstance(part, str) and part.startswith("~")))


class SegmentDefinition(BaseModel):
    """A segment: a name, what it is for, and its rule."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")]
    description: Annotated[str, Field(max_length=1000)] | None = None
    rule: Rule


# ---------------------------------------------------------------------------- checks


def _check_field_condition(condition: FieldCondition) -> None:
    field, op, value = condition.field, condition.op, condition.value
    attribute = ATTRIBUTE.match(field)
    if not attribute and field not in KNOWN_FIELDS:
        raise ValueError(
            f"unknown field {field!r}: use one of {', '.join(KNOWN_FIELDS)}, or attributes.<name>"
        )
    if op is Op.EXISTS:
        if value is not None and not isinstance(value, bool):
            raise ValueError("op 'exists' takes value true or false (or none, meaning true)")
        if field in TIME_FIELDS or field in NUMBER_FIELDS:
            raise ValueError(f"{field} always exists")
        return
    if field in TIME_FIELDS:
        if op not in TIME_OPS:
            raise ValueError(f"{field} takes op within_days or older_than_days, not {op.value!r}")
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 36500:
            raise ValueError(f"op {op.value!r} takes a whole number of days, 1 to 36500")
        return
    if op in TIME_OPS:
        raise ValueError(f"op {op.value!r} is for created_at and updated_at only")
    if op in (Op.IN, Op.NOT_IN):
        if not isinstance(value, list) or not value:
            raise ValueError(f"op {op.value!r} takes a non-empty list of values")
        if len({type(v) for v in value}) > 1:
            raise ValueError(f"the values of op {op.value!r} must all be of one type")
        sample: Any = value[0]
    else:
        if value is None or isinstance(value, list):
            raise ValueError(f"op {op.value!r} takes one value")
        sample = value
    if field in NUMBER_FIELDS and (isinstance(sample, bool) or not isinstance(sample, int | float)):
        raise ValueError(f"{field} is a number: compare it with a number")
    if field in STRING_FIELDS and not isinstance(sample, str):
        raise ValueError(f"{field} is text: compare it with text")
    allowed = (
        BOOL_OPS
        if isinstance(sample, bool)
        else NUMBER_OPS
        if isinstance(sample, int | float)
        else STRING_OPS
    )
    if op not in allowed:
        raise ValueError(f"op {op.value!r} does not apply to {type(sample).__name__} values")


# --------------------------------------------------------------------------- compiler


class Context:
    """What compiling needs besides the rule: the time, today's score decay factor, and
    whether the query is about one profile (membership) or about all of them (counts)."""

    def __init__(self, now: datetime, score_factor: float, one_profile: bool = False) -> None:
        self.now = now
        self.score_factor = score_factor
        self.one_profile = one_profile

    def for_one_profile(self) -> Context:
        return Context(self.now, self.score_factor, one_profile=True)


def where_clause(rule: Rule, context: Context) -> ColumnElement[bool]:
    """SQL that is true for the (unmerged) profiles the rule selects."""
    return and_(Profile.merged_into_id.is_(None), _compile(rule, context))


def _compile(rule: Rule, context: Context) -> ColumnElement[bool]:
    match rule:
        case AllOf(all=parts):
            return and_(true(), *(_compile(p, context) for p in parts))
        case AnyOf(any=parts):
            return _any(parts, context)
        case NotOf(not_=part):
            return not_(_compile(part, context))
        case FieldCondition():
            return _field(rule, context)
        case IdentityCondition(identity=kind):
            return exists().where(Identity.profile_id == Profile.id, Identity.kind == kind.value)
        case ConsentCondition(consent=channel, purpose=purpose, state=state):
            return _consent(channel, purpose, state)
        case EventCondition():
            return _event(rule, context)
    raise TypeError(f"not a rule: {rule!r}")


def _any(parts: list[Rule], context: Context) -> ColumnElement[bool]:
    """`any` of several conditions on one table is one EXISTS with the conditions OR-ed
    inside: the same answer, but a single semi-join that PostgreSQL can run in parallel,
    instead of one correlated subquery per condition per profile."""
    consents = [p for p in parts if isinstance(p, ConsentCondition) and p.state is not State.NONE]
    kinds = [p.identity.value for p in parts if isinstance(p, IdentityCondition)]
    events = [p for p in parts if isinstance(p, EventCondition) and p.at_least == 1]
    grouped = {id(p) for p in [*consents, *events]} | {
        id(p) for p in parts if isinstance(p, IdentityCondition)
    }
    alternatives = [_compile(p, context) for p in parts if id(p) not in grouped]
    if consents:
        alternatives.append(
            exists().where(
                ConsentState.profile_id == Profile.id,
                or_(*(_consent_row(c.consent, c.purpose, c.state) for c in consents)),
            )
        )
    if kinds:
        alternatives.append(
            exists().where(Identity.profile_id == Profile.id, Identity.kind.in_(kinds))
        )
    if events:
        alternatives.append(
            exists().where(
                Event.profile_id == Profile.id,
                or_(*(and_(*_event_filters(e, context)) for e in events)),
            )
        )
    return or_(false(), *alternatives)


def score_expression(context: Context) -> Column[float]:
    return Profile.score_events * context.score_factor + Profile.score_attributes


def _field(condition: FieldCondition, context: Context) -> ColumnElement[bool]:
    field, op, value = condition.field, condition.op, condition.value
    if field in TIME_FIELDS:
        column: Any = getattr(Profile, field)
        cutoff = context.now - timedelta(days=int(value))  # type: ignore[arg-type]
        timed: ColumnElement[bool] = column >= cutoff if op is Op.WITHIN_DAYS else column < cutoff
        return timed
    sample = value[0] if isinstance(value, list) else value
    attribute = ATTRIBUTE.match(field)
    if attribute:
        key = attribute.group(1)
        if op is Op.EXISTS:
            present: ColumnElement[bool] = json_present(Profile.attributes, key)
            return present if value is not False else not_(present)
        column = _typed(Profile.attributes, key, sample)
    elif field == "score":
        column = score_expression(context)
    else:
        column = getattr(Profile, field)
        if op is Op.EXISTS:
            known: ColumnElement[bool] = (
                column.is_not(None) if value is not False else column.is_(None)
            )
            return known
    return _compare(column, op, value)


def _compare(column: Any, op: Op, value: Any) -> ColumnElement[bool]:
    match op:
        case Op.EQ:
            return column == value  # type: ignore[no-any-return]
        case Op.NE:
            # A missing value is "not equal" too.
            return or_(column.is_(None), column != value)
        case Op.IN:
            return column.in_(value)  # type: ignore[no-any-return]
        case Op.NOT_IN:
            return or_(column.is_(None), column.not_in(value))
        case Op.CONTAINS:
            return column.contains(value, autoescape=True)  # type: ignore[no-any-return]
        case Op.STARTS_WITH:
            return column.startswith(value, autoescape=True)  # type: ignore[no-any-return]
        case Op.GT:
            return column > value  # type: ignore[no-any-return]
        case Op.GTE:
            return column >= value  # type: ignore[no-any-return]
        case Op.LT:
            return column < value  # type: ignore[no-any-return]
        case Op.LTE:
            return column <= value  # type: ignore[no-any-return]
    raise ValueError(f"op {op} cannot compare")


def _typed(document: Any, key: str, sample: Any) -> Any:
    """The JSON value at `key`, read as the type of `sample` (NULL if it is another type)."""
    if isinstance(sample, bool):
        return json_bool(document, key)
    if isinstance(sample, int | float):
        return json_number(document, key)
    return json_text(document, key)


def _consent_row(channel: Channel, purpose: Purpose, state: State | None) -> ColumnElement[bool]:
    assert channel in CONCRETE_CHANNELS
    row = and_(ConsentState.channel == channel.value, ConsentState.purpose == purpose.value)
    return row if state is None else and_(row, ConsentState.state == state.value)


def _consent(channel: Channel, purpose: Purpose, state: State) -> ColumnElement[bool]:
    if state is State.NONE:
        return not_(
            exists().where(
                ConsentState.profile_id == Profile.id, _consent_row(channel, purpose, None)
            )
        )
    return exists().where(
        ConsentState.profile_id == Profile.id, _consent_row(channel, purpose, state)
    )


def _event_filters(condition: EventCondition, context: Context) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = [Event.type == condition.event]
    if condition.within_days is not None:
        filters.append(Event.occurred_at >= context.now - timedelta(days=condition.within_days))
    for key, value in condition.where.items():
        filters.append(_typed(Event.properties, key, value) == value)
    return filters


def _event(condition: EventCondition, context: Context) -> ColumnElement[bool]:
    filters = _event_filters(condition, context)
    if condition.at_least == 1:
        # A semi-join (or anti-join under `not`) over everyone; an index probe for one.
        return exists().where(Event.profile_id == Profile.id, *filters)
    if context.one_profile:
        done = select(func.count()).where(Event.profile_id == Profile.id, *filters)
        return done.scalar_subquery() >= condition.at_least
    often = select(Event.profile_id).where(*filters).group_by(Event.profile_id)
    return Profile.id.in_(often.having(func.count() >= condition.at_least))
