"""Request and response bodies of the message routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from backend.people.schemas import Phone

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
    if_not_now: Literal["hold", "refuse"] = Field(
        "hold",
        description="a marketing text the guards will not let go now (quiet hours in the "
        "person's time zone, the frequency cap): `hold` keeps it and sends it when it may "
        "(202, `held`); `refuse` answers 409 with `not_before`, the time it may go",
    )

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
