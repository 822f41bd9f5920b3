"""Request and response bodies of the message routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from backend.core.identities import InvalidAddress, normalise_email
from backend.messaging.email_door import MAX_SUBJECT
from backend.people.schemas import Phone, phone_for_context

Sid = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}[0-9a-fA-F]{32}$")]
MediaUrl = Annotated[str, StringConstraints(pattern=r"^https?://\S{1,2000}$")]


class TextIn(BaseModel):
    """A message to send: a text (`channel: sms`, the default), a message into a
    person's web chat conversation (`channel: web`, `to` its session id), or an e-mail
    (`channel: email`, `to` an address, with a `subject`; `body` is its text, `html` its
    HTML part, made from the text when left out). It goes only if consent allows its
    purpose on that channel at this moment: marketing needs marketing consent granted;
    transactional messages go unless the person withdrew consent; a conversational text
    answers a text the person sent (`in_reply_to`); a compliance text is the one answer
    to a STOP, START or HELP text. Marketing also waits for quiet hours and the
    frequency cap (`if_not_now`)."""

    model_config = ConfigDict(extra="forbid")

    channel: Literal["sms", "web", "email"] = "sms"
    to: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    body: Annotated[str, StringConstraints(max_length=100_000)] = ""
    subject: Annotated[str, StringConstraints(max_length=MAX_SUBJECT)] | None = None
    html: Annotated[str, StringConstraints(max_length=500_000)] | None = None
    media_urls: Annotated[list[MediaUrl], Field(max_length=10)] = []
    purpose: Literal["marketing", "transactional", "conversational", "compliance"]
    in_reply_to: Annotated[int, Field(ge=1, le=2**62)] | None = None
    send_key: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    if_not_now: Literal["hold", "refuse"] = Field(
        "hold",
        description="a marketing message the guards will not let go now (quiet hours in "
        "the person's time zone, the frequency cap): `hold` keeps it and sends it when it "
        "may (202, `held`); `refuse` answers 409 with `not_before`, the time it may go",
    )

    @field_validator("to")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        channel = info.data.get("channel", "sms")
        if channel == "sms":
            return phone_for_context(value, info)
        if channel == "email":
            try:
                return normalise_email(value)
            except InvalidAddress as error:
                raise ValueError(f"not an e-mail address: {error}") from None
        if any(c.isspace() for c in value) or not value.isprintable():
            raise ValueError("a web chat session id has no spaces or control characters")
        return value

    @model_validator(mode="after")
    def _something_to_send(self) -> TextIn:
        if not self.body.strip() and not self.media_urls:
            raise ValueError("a message needs a body or media_urls")
        if self.channel != "email" and (self.subject is not None or self.html is not None):
            raise ValueError("only an e-mail has a subject and html")
        if self.channel != "email" and len(self.body) > 1600:
            raise ValueError("a text or web message has at most 1600 characters")
        if self.channel == "web":
            if self.media_urls or self.in_reply_to is not None:
                raise ValueError("a web message has a body only (no media_urls, in_reply_to)")
            if self.purpose not in ("marketing", "transactional"):
                raise ValueError("a web message Parley starts is marketing or transactional")
        if self.channel == "email":
            if self.media_urls or self.in_reply_to is not None:
                raise ValueError(
                    "an e-mail has a subject, body and html (no media_urls, in_reply_to)"
                )
            if not self.subject or not self.subject.strip() or not self.subject.isprintable():
                raise ValueError("an e-mail needs a subject: one line of printable text")
            if self.purpose == "compliance":
                raise ValueError("an e-mail is marketing, transactional or conversational")
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
    subject: str | None = None  # an e-mail's
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


class HeldOut(BaseModel):
    """A marketing message held by the guards until `not_before`, when it is sent
    through its door (consent and the guards checked again)."""

    id: int
    profile_id: uuid.UUID
    channel: str
    to_address: str
    purpose: str
    body: str
    media_urls: list[str]
    send_key: str | None
    reason: Literal["quiet-hours", "frequency-cap"]
    not_before: datetime
    status: Literal["held", "sent", "refused", "cancelled"] = Field(
        description="held until not_before; sent (message_id: its first part); refused "
        "(consent withdrawn meanwhile, see detail); cancelled through the API"
    )
    detail: str | None
    message_id: int | None
    attempts: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class HeldPage(BaseModel):
    """Held messages, oldest first; `next` is the id to pass as `after`."""

    items: list[HeldOut]
    next: int | None


class TextSent(BaseModel):
    """The parts of a text, as sent (or as sent before, for a repeated send_key); or,
    with status 202, the text held for later (`held`, and no parts yet)."""

    messages: list[MessageOut]
    held: HeldOut | None = None


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


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as error:
        raise ValueError(f"not an e-mail address: {error}") from None


# An e-mail address in a body, normalised (backend.core.identities).
EmailAddress = Annotated[
    str, StringConstraints(min_length=3, max_length=320), AfterValidator(_email)
]


class EmailEventIn(BaseModel):
    """What a mail provider reported about an e-mail or an address: `bounce` (with
    `permanent` false for a soft bounce) or `complaint` (marked as spam)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["bounce", "complaint"]
    address: EmailAddress
    permanent: bool = True
    message_id: Annotated[str, StringConstraints(min_length=1, max_length=998)] | None = None
    reason: Annotated[str, StringConstraints(max_length=2000)] | None = None


class EmailEventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: Annotated[list[EmailEventIn], Field(min_length=1, max_length=500)]


class EmailEventsRecorded(BaseModel):
    """Each event's outcome, in order: suppressed, noted, withdrawn or already."""

    outcomes: list[Literal["suppressed", "noted", "withdrawn", "already", "ignored"]]
