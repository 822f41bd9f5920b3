"""Response body of the score route."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
)


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
