"""Follow-up sequences: the drips marketers script, one file each in data/sequences/.

A sequence is a trigger (what enrols a person), entry conditions, a re-entry policy, exit
conditions, send limits and a list of steps (`wait`, `send`, `branch`, `update`,
`handoff`). Every step has an id, so that branches jump to steps by id and results are
counted per step.

This module is the typed model of a sequence file. `checks` checks what needs more than
the file itself (segments, the Rasa domain, the business, templates compiled and tried
on a sample profile), `templates` renders in a sandbox; backend.data_files reads the
files and reports every mistake as file:line. `enrolment` enrols people and `scheduler`
runs the steps; docs/sequences.md ("How sequences run") says how they run.
"""

from __future__ import annotations

import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from backend.consent.ledger import Purpose
from backend.messaging.guards import Caps, QuietHours, TimeOfDay
from backend.segments.rules import Scalar

EXIT = "exit"  # the target that ends the sequence: `then: exit`, `goto: exit`
MAX_SMS_SEGMENTS = 3
MAX_TEXT_TEMPLATE = 2000  # a text, a web chat message or a call's words
MAX_EMAIL_TEMPLATE = 100_000  # an e-mail's HTML body, as written
MAX_DURATION = timedelta(days=365)


# ------------------------------------------------------------------------------ words


def _named(pattern: str, what: str, rule: str, example: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not a valid {what}: {rule}, like {example}")
        return value

    return AfterValidator(check)


_LOWER_DASHED = "lower-case letters, digits and -, up to 64"
SequenceName = Annotated[
    str, _named(r"[a-z0-9][a-z0-9\-]{0,63}", "sequence name", _LOWER_DASHED, "trial-nurture")
]
SegmentName = Annotated[
    str, _named(r"[a-z0-9][a-z0-9\-]{0,63}", "segment name", _LOWER_DASHED, "hot-leads")
]
# The pattern the events API accepts (backend.events.schemas.EventType).
EventType = Annotated[
    str,
    _named(
        r"[a-z][a-z0-9_.]{0,63}",
        "event type",
        "lower-case letters, digits, _ and .",
        "trial_started",
    ),
]
IntentName = Annotated[
    str,
    _named(
        r"[a-z0-9_]{1,100}(/[a-z0-9_]{1,100})?",
        "intent",
        "lower-case letters, digits and _",
        "ask_price",
    ),
]
FormName = Annotated[
    str, _named(r"[a-z0-9_]{1,100}", "form name", "lower-case letters, digits and _", "lead_form")
]
AttributeName = Annotated[
    str,
    _named(r"[A-Za-z0-9_\-]{1,64}", "attribute name", "letters, digits, _ and -, up to 64", "plan"),
]
PropertyName = Annotated[str, Field(min_length=1, max_length=64)]
VariantName = Annotated[
    str,
    _named(
        r"[a-z0-9][a-z0-9_\-]{0,31}",
        "variant name",
        "lower-case letters, digits, _ and -, up to 32",
        "short",
    ),
]
_STEP_ID = re.compile(r"[a-z0-9][a-z0-9_\-]{0,63}")


def _step_id(value: str) -> str:
    if value == EXIT:
        raise ValueError(
            f"{EXIT!r} is reserved (`goto: exit` ends the sequence): choose another id"
        )
    if not _STEP_ID.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid step id: lower-case letters, digits, _ and -, up to 64, "
            "like send-welcome"
        )
    return value


def _target(value: str) -> str:
    return value if value == EXIT else _step_id(value)


StepId = Annotated[str, AfterValidator(_step_id)]
Target = Annotated[str, AfterValidator(_target)]
TemplateText = Annotated[str, Field(min_length=1, max_length=MAX_EMAIL_TEMPLATE)]
# As written (template code included); rendered, at most 200 characters (sequences.checks).
SubjectText = Annotated[str, Field(min_length=1, max_length=1000)]


# ---------------------------------------------------------------- durations and times

_DURATION = re.compile(r"(\d{1,6})\s*([a-z]+)")
_UNIT_SECONDS = {
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400),
}
_DURATION_HINT = "write a number and a unit, like 30m, 3h, 2d or 1w"


def parse_duration(value: object) -> timedelta:
    """ "30m", "3h", "2d", "1w" (or "2 days", "3 hours") as a timedelta; anything else is a
    ValueError that says how to write one."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} has no unit: {_DURATION_HINT}")
    if not isinstance(value, str):
        raise ValueError(f"a duration is text: {_DURATION_HINT}")
    match = _DURATION.fullmatch(value.strip().lower())
    if not match or match.group(2) not in _UNIT_SECONDS:
        raise ValueError(f"{value!r} is not a duration: {_DURATION_HINT}")
    length = timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    if not length:
        raise ValueError(f"{value!r} is no time at all: the shortest is 1m")
    if length > MAX_DURATION:
        raise ValueError(f"{value!r} is too long: the longest is 365d")
    return length


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class Weekday(StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


_DAY_GROUPS = {
    "weekdays": list(Weekday)[:5],
    "weekend": list(Weekday)[5:],
}


def _weekdays(value: object) -> list[Weekday]:
    names = value if isinstance(value, list) else [value]
    days: list[Weekday] = []
    for name in names:
        word = name.strip().lower() if isinstance(name, str) else name
        if isinstance(word, str) and word in _DAY_GROUPS:
            days += _DAY_GROUPS[word]
        elif isinstance(word, str) and word in Weekday.__members__.values():
            days.append(Weekday(word))
        else:
            raise ValueError(
                f"{name!r} is not a weekday: write monday … sunday, weekdays or weekend, "
                "or a list of them"
            )
    if not days:
        raise ValueError("name at least one weekday")
    return sorted(set(days), key=list(Weekday).index)


def _share(value: object) -> object:
    """0.1 or "10%"."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            pass
    return value


# ---------------------------------------------------------------------- the file model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _kind_of(kinds: dict[str, str], by_type: dict[type[BaseModel], str]) -> Any:
    """A discriminator: the tag of the one kind key a mapping has (None for none or two)."""

    def kind(value: Any) -> str | None:
        if isinstance(value, dict):
            found = [tag for key, tag in kinds.items() if key in value]
            return found[0] if len(found) == 1 else None
        return by_type.get(type(value))

    return kind


# Triggers: what enrols a person. Tags start with "~" so error locations leave them out
# (backend.segments.rules.error_path).


class EventTrigger(_Strict):
    """An event arrives (from the events API, the website, the shop, or the bot)."""

    event: EventType
    where: dict[PropertyName, Scalar] = Field(default_factory=dict, max_length=10)


class IntentTrigger(_Strict):
    """The bot understood this intent in a conversation."""

    intent: IntentName


class FormCompletedTrigger(_Strict):
    """The bot completed this form (e.g. lead_form) in a conversation."""

    form_completed: FormName


class SegmentEnteredTrigger(_Strict):
    """The person came to match this segment."""

    segment_entered: SegmentName


class ApiTrigger(_Strict):
    """Only enrolment through the API (written `trigger: api`)."""

    api: bool = True

    @model_validator(mode="before")
    @classmethod
    def _word(cls, value: Any) -> Any:
        return {} if value == "api" else value

    @field_validator("api")
    @classmethod
    def _true(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "write `trigger: api` for a sequence people enter only through the API"
            )
        return value


_TRIGGER_KINDS = {
    "event": "~event",
    "intent": "~intent",
    "form_completed": "~form_completed",
    "segment_entered": "~segment_entered",
    "api": "~api",
}
_TRIGGER_TYPES: dict[type[BaseModel], str] = {
    EventTrigger: "~event",
    IntentTrigger: "~intent",
    FormCompletedTrigger: "~form_completed",
    SegmentEnteredTrigger: "~segment_entered",
    ApiTrigger: "~api",
}
_trigger_object = _kind_of(_TRIGGER_KINDS, _TRIGGER_TYPES)


def _trigger_kind(value: Any) -> str | None:
    return "~api" if value == "api" else _trigger_object(value)


Trigger = Annotated[
    Annotated[EventTrigger, Tag("~event")]
    | Annotated[IntentTrigger, Tag("~intent")]
    | Annotated[FormCompletedTrigger, Tag("~form_completed")]
    | Annotated[SegmentEnteredTrigger, Tag("~segment_entered")]
    | Annotated[ApiTrigger, Tag("~api")],
    Discriminator(
        _trigger_kind,
        custom_error_type="invalid_trigger",
        custom_error_message=(
            "a trigger is `api` or has one of the keys: event, intent, form_completed, "
            "segment_entered"
        ),
    ),
]


class ConsentNeeded(StrEnum):
    SMS = "sms"
    WEB = "web"
    VOICE = "voice"
    EMAIL = "email"
    ANY = "any"


class Entry(_Strict):
    """Who may enter, checked when the trigger fires (besides not being in it already)."""

    segments: list[SegmentName] = Field(default_factory=list, max_length=10)
    not_segments: list[SegmentName] = Field(default_factory=list, max_length=10)
    # Marketing consent granted on this channel (any: on at least one).
    consent: ConsentNeeded | None = None


class ReentryPolicy(StrEnum):
    NEVER = "never"
    ALWAYS = "always"
    AFTER = "after"


class Reentry(_Strict):
    """Whether someone who left may enter again: never, always, or some time after leaving.
    Nobody is ever in the same sequence twice at once."""

    policy: ReentryPolicy = ReentryPolicy.NEVER
    after: Duration | None = None

    @model_validator(mode="before")
    @classmethod
    def _written(cls, value: Any) -> Any:
        if value in ("never", "always"):
            return {"policy": value}
        if isinstance(value, dict) and set(value) == {"after"}:
            return {"policy": "after", "after": value["after"]}
        if isinstance(value, Reentry) or (isinstance(value, dict) and "policy" in value):
            return value  # built in code
        raise ValueError(
            f"{value!r} is not a re-entry policy: write never, always, or {{after: 30d}} "
            "(how long after leaving someone may enter again)"
        )


class GoalEvent(_Strict):
    event: EventType
    where: dict[PropertyName, Scalar] = Field(default_factory=dict, max_length=10)


def _goal(value: Any) -> Any:
    return {"event": value} if isinstance(value, str) else value


def _always_on(value: bool) -> bool:
    if value is not True:
        raise ValueError(
            "is always on: people who opt out or are handed to a person leave every sequence"
        )
    return value


class ExitWhen(_Strict):
    """When a person leaves before the last step. Opting out and being handed off always
    end it; so does pausing the sequence."""

    # Events that count as reaching the sequence's goal (its conversions).
    goal: list[Annotated[GoalEvent, BeforeValidator(_goal)]] = Field(
        default_factory=list, max_length=10
    )
    # Any message from the person after they entered ends it.
    replied: bool = True
    opted_out: Annotated[bool, AfterValidator(_always_on)] = True
    handed_off: Annotated[bool, AfterValidator(_always_on)] = True


# Steps.


class WaitUntil(_Strict):
    """Wait at least `for`, then until the next `until` (a time of day in the person's
    time zone) on one of the days `on`."""

    for_: Duration | None = Field(None, alias="for")
    until: TimeOfDay | None = None
    on: Annotated[list[Weekday], BeforeValidator(_weekdays)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _on_is_a_word(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted `on` key as true; here it can only mean `on`.
        if isinstance(value, dict) and True in value:
            value = {("on" if k is True else k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _says_something(self) -> WaitUntil:
        if self.on and self.until is None:
            raise ValueError('say at what time on that day: until: "10:00"')
        if self.for_ is None and self.until is None:
            raise ValueError('say how long (for: 2d) or until when (until: "10:00") to wait')
        return self


def _wait_kind(value: Any) -> str:
    return "~until" if isinstance(value, dict | WaitUntil) else "~for"


Wait = Annotated[
    Annotated[Duration, Tag("~for")] | Annotated[WaitUntil, Tag("~until")],
    Discriminator(_wait_kind),
]


class SendChannel(StrEnum):
    SMS = "sms"
    WEB = "web"
    VOICE = "voice"
    EMAIL = "email"
    # The most recent channel the person consented to (for the message's purpose); e-mail
    # only when the step has a subject.
    BEST = "best"


class Variant(_Strict):
    name: VariantName
    # Relative: weights 2 and 1 send two thirds of people the first text, a third the other.
    weight: float = 1
    template: TemplateText
    # An e-mail's subject for this variant (else the step's): subject lines are A/B tested.
    subject: SubjectText | None = None

    @field_validator("name")
    @classmethod
    def _not_the_holdout(cls, value: str) -> str:
        if value == "holdout":
            raise ValueError("'holdout' names the people who get nothing; call the variant else")
        return value

    @field_validator("weight")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not 0 < value <= 1000:
            raise ValueError(
                f"{value:g} is not a weight: a number above 0 (up to 1000); weights are "
                "relative, 2 and 1 send two thirds of people one text and a third the other"
            )
        return value


class StepMessage(_Strict):
    channel: SendChannel
    purpose: Purpose = Purpose.MARKETING
    # The text; for `channel: email`, the e-mail's HTML body (its text part is made from it).
    template: TemplateText | None = None
    # An e-mail's subject (a template too). With `best` it lets the step go by e-mail, the
    # template then being the e-mail's text.
    subject: SubjectText | None = None
    variants: list[Variant] | None = None
    # The share of people who get nothing at this step (the control group).
    holdout: Annotated[float, BeforeValidator(_share)] = 0
    # The question the text asks, as the bot knows it (a value of its `follow_up` slot,
    # bot/domain/follow_up.yml): a "yes" or "no" in reply is read in its light.
    asks: StepId | None = None

    @field_validator("variants")
    @classmethod
    def _an_ab_test(cls, value: list[Variant] | None) -> list[Variant] | None:
        if value is not None and not 2 <= len(value) <= 10:
            raise ValueError("an A/B test has 2 to 10 variants; for one text, use `template`")
        return value

    @field_validator("holdout")
    @classmethod
    def _a_share(cls, value: float) -> float:
        if not 0 <= value <= 0.5:
            raise ValueError(
                f"{value:g} is not a holdout share: 0 to 0.5, the part of people who receive "
                "nothing (0.1 or 10% for one in ten)"
            )
        return value

    @model_validator(mode="after")
    def _one_text(self) -> StepMessage:
        if (self.template is None) == (self.variants is None):
            raise ValueError("give either `template` (one text) or `variants` (an A/B test)")
        email = self.channel is SendChannel.EMAIL
        subjects = [self.subject_of(v) for v in self.choices]
        if self.channel not in (SendChannel.EMAIL, SendChannel.BEST) and any(subjects):
            raise ValueError(
                "only e-mails have a subject: use `channel: email` (or `best`, which may "
                "then choose e-mail)"
            )
        if (email or any(subjects)) and not all(subjects):
            raise ValueError("an e-mail needs a `subject` (on the step, or on every variant)")
        if not email and any(len(v.template) > MAX_TEXT_TEMPLATE for v in self.choices):
            raise ValueError(
                f"a text template is at most {MAX_TEXT_TEMPLATE} characters (an e-mail's "
                f"HTML, up to {MAX_EMAIL_TEMPLATE})"
            )
        if email and self.asks is not None:
            raise ValueError(
                "an e-mail asks no question the bot reads: replies to e-mails go to a person"
            )
        return self

    @property
    def may_email(self) -> bool:
        """Whether the step can go by e-mail: it is one, or `best` with a subject."""
        return self.channel is SendChannel.EMAIL or (
            self.channel is SendChannel.BEST and self.subject_of(self.choices[0]) is not None
        )

    def subject_of(self, variant: Variant) -> str | None:
        return variant.subject or self.subject

    @property
    def choices(self) -> list[Variant]:
        if self.variants:
            return self.variants
        assert self.template is not None
        return [Variant(name="default", weight=1, template=self.template)]

    def variant_for(self, roll: float) -> Variant | None:
        """The variant a person whose `roll` (uniform in [0, 1), fixed per person and step)
        gets; None for the holdout, who get nothing."""
        if roll < self.holdout:
            return None
        choices = self.choices
        point = (roll - self.holdout) / (1 - self.holdout) * sum(v.weight for v in choices)
        for variant in choices:
            point -= variant.weight
            if point < 0:
                return variant
        return choices[-1]


class RepliedCondition(_Strict):
    """Replied (or, with false, did not) since entering, or within the last `within`."""

    replied: bool
    within: Duration | None = None


class EventCondition(_Strict):
    """Did this since entering, or within the last `within`."""

    event: EventType
    where: dict[PropertyName, Scalar] = Field(default_factory=dict, max_length=10)
    within: Duration | None = None


class ScoreRange(_Strict):
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _bounded(self) -> ScoreRange:
        if all(v is None for v in (self.gt, self.gte, self.lt, self.lte)):
            raise ValueError("give a bound: gt, gte, lt or lte, like {gte: 60}")
        return self


class ScoreCondition(_Strict):
    """Today's lead score is in the range."""

    score: ScoreRange


class SegmentCondition(_Strict):
    """Is in the segment now."""

    segment: SegmentName


Condition = Annotated[
    Annotated[RepliedCondition, Tag("~replied")]
    | Annotated[EventCondition, Tag("~event")]
    | Annotated[ScoreCondition, Tag("~score")]
    | Annotated[SegmentCondition, Tag("~segment")],
    Discriminator(
        _kind_of(
            {"replied": "~replied", "event": "~event", "score": "~score", "segment": "~segment"},
            {
                RepliedCondition: "~replied",
                EventCondition: "~event",
                ScoreCondition: "~score",
                SegmentCondition: "~segment",
            },
        ),
        custom_error_type="invalid_condition",
        custom_error_message="a condition has one of the keys: replied, event, score, segment",
    ),
]


class Case(_Strict):
    when: Condition
    goto: Target


class Update(_Strict):
    set_: dict[AttributeName, Scalar | None] = Field(
        default_factory=dict, alias="set", max_length=20
    )
    add_points: Annotated[float, Field(ge=-1000, le=1000)] | None = None

    @model_validator(mode="after")
    def _does_something(self) -> Update:
        if not self.set_ and not self.add_points:
            raise ValueError("say what to update: set: {attribute: value} and/or add_points: 5")
        return self


class Handoff(_Strict):
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class WaitStep(_Strict):
    id: StepId
    wait: Wait
    then: Target | None = None

    @property
    def plan(self) -> WaitUntil:
        return self.wait if isinstance(self.wait, WaitUntil) else WaitUntil(for_=self.wait)


class SendStep(_Strict):
    id: StepId
    send: StepMessage
    then: Target | None = None


class BranchStep(_Strict):
    """The first case that holds says where to go; none: `otherwise`, else the next step."""

    id: StepId
    branch: Annotated[list[Case], Field(min_length=1, max_length=10)]
    otherwise: Target | None = None


class UpdateStep(_Strict):
    id: StepId
    update: Update
    then: Target | None = None


class HandoffStep(_Strict):
    """Hands the person to a person; the sequence ends for them."""

    id: StepId
    handoff: Handoff


Step = Annotated[
    Annotated[WaitStep, Tag("~wait")]
    | Annotated[SendStep, Tag("~send")]
    | Annotated[BranchStep, Tag("~branch")]
    | Annotated[UpdateStep, Tag("~update")]
    | Annotated[HandoffStep, Tag("~handoff")],
    Discriminator(
        _kind_of(
            {
                "wait": "~wait",
                "send": "~send",
                "branch": "~branch",
                "update": "~update",
                "handoff": "~handoff",
            },
            {
                WaitStep: "~wait",
                SendStep: "~send",
                BranchStep: "~branch",
                UpdateStep: "~update",
                HandoffStep: "~handoff",
            },
        ),
        custom_error_type="invalid_step",
        custom_error_message=(
            "a step has an id and exactly one of: wait, send, branch, update, handoff"
        ),
    ),
]


class SequenceDefinition(_Strict):
    """One data/sequences/*.yml file."""

    name: SequenceName
    description: Annotated[str, Field(max_length=1000)] | None = None
    # Paused: nobody enters, and people in it leave at their next step.
    paused: bool = False
    trigger: Trigger
    entry: Entry = Entry()
    reentry: Reentry = Reentry(policy=ReentryPolicy.NEVER)
    exit_when: ExitWhen = ExitWhen()
    caps: Caps = Caps()
    quiet_hours: QuietHours | None = None
    steps: Annotated[list[Step], Field(min_length=1, max_length=100)]

    def successors(self, index: int) -> list[str]:
        """Where a person goes after the step at `index` (EXIT: the sequence ends)."""
        step = self.steps[index]
        following = self.steps[index + 1].id if index + 1 < len(self.steps) else EXIT
        match step:
            case HandoffStep():
                return [EXIT]
            case BranchStep(branch=cases, otherwise=otherwise):
                return [*(c.goto for c in cases), otherwise or following]
            case _:
                return [step.then or following]


def named(sequences: list[SequenceDefinition], name: str) -> SequenceDefinition | None:
    """The sequence loaded under `name`, if any."""
    return next((s for s in sequences if s.name == name), None)
