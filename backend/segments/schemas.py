"""Request and response bodies of the segment routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
)

from backend.people.schemas import ProfileOut
from backend.segments.rules import Rule


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
