"""Request and response bodies of the demo routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)


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
