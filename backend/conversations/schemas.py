"""Response bodies of the conversation routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class TranscriptLine(BaseModel):
    at: datetime | None
    speaker: Literal["customer", "bot", "follow_up", "agent", "note"]
    text: str
    agent: str | None = Field(None, description="who answered, for an agent's line")
    channel: str | None = Field(None, description="the channel a customer's line came on")
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = []
    slots: dict[str, Any] = Field({}, description="slots the bot set after this line")


class Transcript(BaseModel):
    """A conversation as Rasa holds it, oldest line first."""

    conversation_id: str
    lines: list[TranscriptLine]
