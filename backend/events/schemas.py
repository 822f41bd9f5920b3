"""Request and response bodies of the event routes."""

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

from backend.people.schemas import AttributeKey, IdentityIn

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
