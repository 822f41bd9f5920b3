"""Request and response bodies of the API, as pydantic models.

The same models validate requests, serialise responses and generate the OpenAPI
document, so the three cannot drift apart.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from backend.consent.ledger import Channel, Purpose, State
from backend.people.identities import IdentityKind, InvalidAddress, normalise_email, normalise_phone
from backend.segments.rules import Rule

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as error:
        raise ValueError(str(error)) from error


def _phone(value: str, info: ValidationInfo) -> str:
    region = (info.context or {}).get("default_phone_region", "US")
    try:
        return normalise_phone(value, region)
    except InvalidAddress as error:
        raise ValueError(str(error)) from error


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Paris'") from error
    return value


_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError(f"{value!r} is not a locale tag such as 'en-US'")
    return value.replace("_", "-")


class ProfileFields(BaseModel):
    """A profile's core fields; each may be left out."""

    model_config = ConfigDict(extra="forbid")

    first_name: Name | None = None
    last_name: Name | None = None
    email: Annotated[str, AfterValidator(_email)] | None = None
    phone: Annotated[str, AfterValidator(_phone)] | None = Field(
        None, description="E.164 once stored; national numbers are read in the default region"
    )
    locale: Annotated[str, AfterValidator(_locale)] | None = None
    timezone: Annotated[str, AfterValidator(_timezone)] | None = Field(
        None, description="IANA time zone, e.g. 'America/New_York'"
    )
    company: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


CORE_FIELDS = frozenset(ProfileFields.model_fields)

AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class IdentifyRequest(BaseModel):
    """Find the profile behind a channel identity, creating it if new, and update it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"channel": "web", "address": "3f2a9c", "attributes": {"first_name": "Ada"}}
            ]
        },
    )

    channel: IdentityKind
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    attributes: dict[AttributeKey, JsonValue] = Field(
        default_factory=dict,
        max_length=100,
        description=(
            "Core fields (first_name, last_name, email, phone, locale, timezone, company) "
            "update the profile's fields; any other key is stored as a free attribute. "
            "A null value clears it."
        ),
    )


class IdentityIn(BaseModel):
    """An identity to add to a profile."""

    model_config = ConfigDict(extra="forbid")

    kind: IdentityKind
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]


class IdentityOut(BaseModel):
    kind: IdentityKind
    address: str
    created_at: datetime


class ProfileOut(BaseModel):
    """A profile: core fields, free attributes, identities and today's lead score."""

    id: uuid.UUID
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    company: str | None
    attributes: dict[str, Any]
    identities: list[IdentityOut]
    score: float
    created_at: datetime
    updated_at: datetime


class IdentifyResult(BaseModel):
    """The profile found (200) or created (201) for an identity."""

    created: bool = Field(description="true when this identity was new and a profile was made")
    profile: ProfileOut


class ProfileUpdate(BaseModel):
    """Changes to a profile, with the same meaning as in identify."""

    model_config = ConfigDict(extra="forbid")

    attributes: dict[AttributeKey, JsonValue] = Field(max_length=100)


class IdentityAdded(BaseModel):
    """The profile after adding an identity; if the identity was someone else's, the two
    profiles were the same person and were merged."""

    profile: ProfileOut
    merged_away: uuid.UUID | None = Field(description="the profile merged into this one, if any")


class MergeRequest(BaseModel):
    """Merge another profile of the same person into this one (the older one survives)."""

    model_config = ConfigDict(extra="forbid")

    other: uuid.UUID
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] = "merged by request"


class MergedPointer(BaseModel):
    """This profile was merged into another: follow `merged_into`."""

    merged_into: uuid.UUID


# ------------------------------------------------------------------------------ consent


class ConsentIn(BaseModel):
    """One line for the consent ledger.

    `confirm` confirms a pending double opt-in grant (SMS marketing). Evidence is required
    where the person spoke: `reply` for `sms_keyword`, `wording` and `reply` for `dialogue`.
    """

    model_config = ConfigDict(extra="forbid")

    channel: Channel
    purpose: Purpose
    action: Literal["grant", "withdraw", "confirm"]
    source: Literal["sms_keyword", "dialogue", "api", "import", "console"]
    wording: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="exactly what the person was shown or told"
    )
    reply: Annotated[str, StringConstraints(max_length=2000)] | None = Field(
        None, description="what the person said, in their own words"
    )
    metadata: dict[AttributeKey, JsonValue] = Field(
        default_factory=dict, max_length=30, description="channel details: message id, number, ..."
    )
    occurred_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _evidence(self) -> ConsentIn:
        if self.source in ("sms_keyword", "dialogue") and not self.reply:
            raise ValueError(f"source {self.source!r} needs 'reply': the person's own words")
        if self.source == "dialogue" and not self.wording:
            raise ValueError("source 'dialogue' needs 'wording': what the bot asked")
        return self


class ConsentLineOut(BaseModel):
    seq: int
    channel: Channel
    purpose: Purpose
    action: Literal["grant", "withdraw"]
    pending: bool
    confirms_seq: int | None
    source: str
    wording: str | None
    reply: str | None
    channel_metadata: dict[str, Any]
    occurred_at: datetime
    recorded_at: datetime
    recorded_by: str | None


class ConsentStateOut(BaseModel):
    channel: Channel
    purpose: Purpose
    state: State
    since: datetime


class ConsentOut(BaseModel):
    """A profile's current consent and the ledger it was derived from."""

    profile_id: uuid.UUID
    states: list[ConsentStateOut]
    ledger: list[ConsentLineOut]


class ConsentRecorded(BaseModel):
    """The ledger line written, and the state it leaves."""

    line: ConsentLineOut
    state: State
    allowed: bool = Field(description="may a message of this purpose go out on this channel now")


class ConsentCheck(BaseModel):
    """Whether a message of this purpose may be sent on this channel now."""

    profile_id: uuid.UUID
    channel: Channel
    purpose: Purpose
    state: State
    allowed: bool


# ------------------------------------------------------------------------------- events

EventType = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]


class EventIn(BaseModel):
    """Something a person did. Name them by `profile_id` or by `identity` (created if new)."""

    model_config = ConfigDict(extra="forbid")

    type: EventType
    properties: dict[AttributeKey, JsonValue] = Field(default_factory=dict, max_length=50)
    occurred_at: AwareDatetime | None = Field(None, description="default: when it arrives")
    profile_id: uuid.UUID | None = None
    identity: IdentityIn | None = None
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = Field(
        None, description="an event sent again with the same key is stored once"
    )

    @model_validator(mode="after")
    def _one_profile(self) -> EventIn:
        if (self.profile_id is None) == (self.identity is None):
            raise ValueError("name the person by exactly one of 'profile_id' or 'identity'")
        return self


class EventBatch(BaseModel):
    """Up to 1,000 events, stored all together or not at all."""

    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EventIn], Field(min_length=1, max_length=1000)]


class EventOutcome(BaseModel):
    status: Literal["stored", "duplicate"]
    id: int | None
    profile_id: uuid.UUID


class EventsAccepted(BaseModel):
    """What became of each event, in the order sent."""

    stored: int
    duplicates: int
    results: list[EventOutcome]


class EventOut(BaseModel):
    id: int
    type: str
    properties: dict[str, Any]
    occurred_at: datetime
    received_at: datetime


class EventPage(BaseModel):
    """A profile's events, newest first; pass `next` as `before` for the page after."""

    items: list[EventOut]
    next: int | None


# -------------------------------------------------------------------------------- score


class ScoreReason(BaseModel):
    rule: str
    kind: Literal["event", "attribute"]
    points: float = Field(description="what this rule adds today")
    count: int
    last_at: datetime | None


class ScoreOut(BaseModel):
    """A profile's lead score today and the rules behind it, biggest first."""

    profile_id: uuid.UUID
    score: float
    half_life_days: float
    reasons: list[ScoreReason]


# ----------------------------------------------------------------------------- segments


class SegmentIn(BaseModel):
    """A segment defined through the API."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$")]
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    rule: Rule


class SegmentUpdate(BaseModel):
    """A new description and rule for an API-defined segment."""

    model_config = ConfigDict(extra="forbid")

    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    rule: Rule


class SegmentOut(BaseModel):
    name: str
    description: str | None
    rule: dict[str, Any]
    source: Literal["file", "api"]
    created_at: datetime
    updated_at: datetime


class SegmentList(BaseModel):
    items: list[SegmentOut]


class RulePreview(BaseModel):
    """A rule to count without saving it."""

    model_config = ConfigDict(extra="forbid")

    rule: Rule


class SegmentCount(BaseModel):
    """How many (live) profiles a segment or rule selects right now."""

    count: int
    at: datetime


class MemberPage(BaseModel):
    """A page of members, ordered by id; pass `next` as `after` for the page after."""

    items: list[ProfileOut]
    next: uuid.UUID | None


class Membership(BaseModel):
    segment: str
    profile_id: uuid.UUID
    member: bool


# -------------------------------------------------------------------------------- demos


class DemoIn(BaseModel):
    """Book a demo call for a person at a start time (one booking per start time)."""

    model_config = ConfigDict(extra="forbid")

    profile_id: uuid.UUID
    starts_at: AwareDatetime
    minutes: Annotated[int, Field(ge=10, le=180)] = 30
    conversation_id: Annotated[str, StringConstraints(max_length=200)] | None = None


class DemoMove(BaseModel):
    """A new start time for a booked demo."""

    model_config = ConfigDict(extra="forbid")

    starts_at: AwareDatetime


class DemoOut(BaseModel):
    """A demo booking."""

    id: uuid.UUID
    profile_id: uuid.UUID
    starts_at: datetime
    minutes: int
    status: Literal["booked", "cancelled"]


class DemoList(BaseModel):
    """Demo bookings, earliest first."""

    items: list[DemoOut]


# ----------------------------------------------------------------------------- handoffs


class HandoffIn(BaseModel):
    """Mark a conversation for a person to take over."""

    model_config = ConfigDict(extra="forbid")

    conversation_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    channel: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    reason: Literal["requested", "repeated_failure"]
    profile_id: uuid.UUID | None = None


class HandoffOut(BaseModel):
    """A conversation handed to a person."""

    id: uuid.UUID
    profile_id: uuid.UUID | None
    conversation_id: str
    channel: str
    reason: str
    note: str | None = Field(None, description="what a follow-up sequence's hand-off step says")
    status: Literal["open", "closed"]
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None


class HandoffList(BaseModel):
    """Hand-offs, oldest first."""

    items: list[HandoffOut]


# ----------------------------------------------------------------------------- messages

Phone = Annotated[str, StringConstraints(min_length=1, max_length=32), AfterValidator(_phone)]
Sid = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[0-9a-fA-F]{32}$")]
MediaUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S{1,2000}$")]


class TextIn(BaseModel):
    """A text to send. It goes only if consent allows its purpose at this moment:
    marketing needs SMS marketing consent granted; transactional and conversational
    texts go unless the person withdrew SMS consent; a compliance text is the one
    answer to a STOP, START or HELP text (in_reply_to)."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["sms"] = "sms"
    to: Phone
    body: Annotated[str, StringConstraints(max_length=1600)] = ""
    media_urls: Annotated[list[MediaUrl], Field(max_length=10)] = []
    purpose: Literal["marketing", "transactional", "conversational", "compliance"]
    in_reply_to: Annotated[int, Field(ge=1, le=2**62)] | None = None
    send_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _something_to_send(self) -> TextIn:
        if not self.body.strip() and not self.media_urls:
            raise ValueError("a text needs a body or media_urls")
        return self


class MessageOut(BaseModel):
    """One SMS in or out (a long text is sent as several parts of one batch)."""

    id: int
    profile_id: uuid.UUID | None
    direction: Literal["inbound", "outbound"]
    channel: str
    purpose: str | None
    to_address: str
    from_address: str
    body: str
    media_urls: list[str]
    status: str
    error_code: int | None
    error_message: str | None
    provider_sid: str | None
    keyword: str | None
    in_reply_to: int | None
    batch_id: uuid.UUID
    part: int
    parts: int
    turn: Literal["pending", "done", "failed"] | None = Field(
        None,
        description="an inbound text's answer (the bot's turn, or a keyword's "
        "confirmation): pending until given, done, or failed after every attempt",
    )
    created_at: datetime
    updated_at: datetime


class TextSent(BaseModel):
    """The parts of a text, as sent (or as sent before, for a repeated send_key)."""

    messages: list[MessageOut]


class MessagePage(BaseModel):
    """A profile's texts, newest first; `next` is the id to pass as `before`."""

    items: list[MessageOut]
    next: int | None


class TextReceived(BaseModel):
    """A text a person sent, as the SMS channel hands it over."""

    model_config = ConfigDict(extra="forbid")

    sid: Sid
    from_: Annotated[Phone, Field(alias="from")]
    to: Phone
    body: Annotated[str, StringConstraints(max_length=1600)] = ""
    media_urls: Annotated[list[MediaUrl], Field(max_length=10)] = []
    opt_out_type: Annotated[str, StringConstraints(max_length=16)] | None = None


class TextReceipt(BaseModel):
    """What became of a received text: a repeat of an earlier delivery, a compliance
    keyword already answered (`handled`: the bot must not see it), or for the bot."""

    message_id: int
    profile_id: uuid.UUID | None = Field(
        description="the sender's profile; null for a number Parley did not know yet, "
        "which gets its profile when the text is answered"
    )
    duplicate: bool
    keyword: Literal["stop", "start", "help"] | None
    handled: bool


# -------------------------------------------------------------------------------- audit


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """Audit entries, newest first; pass `next` as `before` for the page after."""

    items: list[AuditOut]
    next: int | None


# ----------------------------------------------------------------------------- operations


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, str]] | None = None
    merged_into: uuid.UUID | None = None


# ---------------------------------------------------------------------------- sequences


class SequenceOut(BaseModel):
    """A follow-up sequence loaded from data/sequences/ (its id is its name)."""

    id: str
    description: str | None
    paused: bool
    trigger: str = Field(description="event:<type>, intent, form_completed, segment_entered or api")
    steps: list[str] = Field(description="the step ids, in file order")


class SequenceList(BaseModel):
    items: list[SequenceOut]


class EnrolmentIn(BaseModel):
    """Enrol a person; the sequence's entry conditions apply (409 with the reason)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"profile_id": "0b5a1d2e-7c1f-4f57-9a43-3f0f1f6e2a10"}]},
    )

    profile_id: uuid.UUID
    # What templates see as event.properties (the event type is `enrolled`).
    properties: dict[Annotated[str, Field(min_length=1, max_length=64)], JsonValue] = Field(
        default_factory=dict, max_length=20
    )


class EnrolmentOut(BaseModel):
    """One person in one sequence."""

    id: uuid.UUID
    sequence: str
    profile_id: uuid.UUID
    status: Literal["active", "exited", "completed"]
    exit_reason: str | None
    current_step: str | None
    enrolled_at: datetime


class LiftOut(BaseModel):
    """A variant's goal rate minus the holdout's, with its 95% confidence interval
    (Newcombe's hybrid score interval for a difference of two proportions)."""

    difference: float = Field(description="goal rate of the variant minus the holdout's")
    low: float = Field(description="lower end of the 95% interval")
    high: float = Field(description="upper end of the 95% interval")


class ArmStats(BaseModel):
    """One arm of a send step: a variant, or the holdout who get nothing."""

    name: str = Field(
        description="the variant's name ('default' for a step with one template) or 'holdout'"
    )
    kind: Literal["variant", "holdout"]
    share: float | None = Field(
        description="the part of the people reaching the step the file sends to this arm; "
        "null for an arm no longer in the file"
    )
    assigned: int = Field(description="enrolments put in this arm at this step")
    sent: int = Field(description="of those, sent a message for this step (it did not fail)")
    delivered: int = Field(description="of those, the message was reported delivered")
    replied: int = Field(
        description="wrote back (not STOP, START or HELP) after the step's message, or for "
        "the holdout after the step was reached"
    )
    goal_reached: int | None = Field(
        description="had a goal event after enrolling; null when the sequence has no goal"
    )
    opted_out: int = Field(description="withdrew SMS marketing consent after enrolling")
    goal_rate: float | None = Field(description="goal_reached / assigned")
    lift: LiftOut | None = Field(
        description="this variant over the holdout; null for the holdout, without a "
        "holdout or a goal, or when either arm has nobody"
    )


class StepStats(BaseModel):
    """One send step: its figures over every arm, then arm by arm."""

    id: str
    holdout: float = Field(description="the holdout share the file gives the step")
    assigned: int
    sent: int
    delivered: int
    replied: int
    goal_reached: int | None
    opted_out: int
    arms: list[ArmStats]


class SequenceTotals(BaseModel):
    enrolled: int
    active: int
    completed: int
    exited: int
    exited_by_reason: dict[str, int] = Field(
        description="exited enrolments by reason: opted_out, replied, goal_reached, paused, …"
    )
    sent: int = Field(description="enrolments sent at least one message (that did not fail)")
    delivered: int = Field(description="enrolments with at least one message delivered")
    replied: int = Field(description="enrolments whose person wrote back after enrolling")
    goal_reached: int | None = Field(description="null when the sequence has no goal")
    opted_out: int
    goal_rate: float | None = Field(description="goal_reached / enrolled")


class SequenceStats(BaseModel):
    """The results of a follow-up sequence (docs/sequences.md, "Results")."""

    sequence: str
    since: datetime | None = Field(description="only enrolments from this time (the query)")
    goals: list[str] = Field(description="the goal event types (exit_when.goal)")
    confidence: float = Field(description="the confidence level of the lift intervals")
    totals: SequenceTotals
    steps: list[StepStats] = Field(description="the send steps, in file order")
