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
