"""Request and response bodies of the hand-off routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

from backend.messaging.schemas import EmailAddress


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
    claimed_by: str | None = Field(None, description="the agent answering it")
    claimed_at: datetime | None = None
    call_back: bool = Field(
        False, description="a phone or voice-assistant conversation: a person calls back"
    )
    closed_at: datetime | None
    closed_by: str | None


class HandoffList(BaseModel):
    """Hand-offs, oldest first."""

    items: list[HandoffOut]


class ClaimIn(BaseModel):
    """Claim a hand-off; `take_over` (admins only) takes it from the agent holding it."""

    model_config = ConfigDict(extra="forbid")

    take_over: bool = False


class ReplyIn(BaseModel):
    """An agent's words to the customer, sent on the conversation's own channel."""

    model_config = ConfigDict(extra="forbid")

    body: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1600)]
    send_key: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        None, description="the same key sent again is the same reply, never sent twice"
    )


class ReplySent(BaseModel):
    """The reply, as the channel's door recorded it."""

    handoff: HandoffOut
    message_id: int
    channel: str
    status: str = Field(description="the door's status: sent, queued, failed, ...")


class EmailIn(BaseModel):
    """An e-mail a person sent the business, as any mail provider's inbound hook (or an
    IMAP reader) hands it over: `text` is their words without the e-mail they quote."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: EmailAddress = Field(alias="from")
    to: Annotated[str, StringConstraints(max_length=320)] = ""
    subject: Annotated[str, StringConstraints(max_length=998)] = ""
    text: Annotated[str, StringConstraints(max_length=100_000)]
    message_id: Annotated[str, StringConstraints(min_length=3, max_length=998)] | None = None
    in_reply_to: Annotated[str, StringConstraints(min_length=3, max_length=998)] | None = None


class EmailReceivedOut(BaseModel):
    """What became of an e-mail: a reply waits in a hand-off; an unsubscribe request
    withdrew e-mail marketing consent."""

    message_id: int
    profile_id: uuid.UUID
    outcome: Literal["handed_off", "unsubscribed"]
    repeated: bool
    handoff_id: uuid.UUID | None
