"""Request and response bodies of the consent routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)

from backend.consent.ledger import Channel, Purpose, State
from backend.people.schemas import AttributeKey


class ConsentIn(BaseModel):
    """One line for the consent ledger.

    `confirm` confirms a pending double opt-in grant (SMS and e-mail marketing). Evidence
    is required where the person spoke: `reply` for `sms_keyword`, `wording` and `reply`
    for `dialogue`.
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
