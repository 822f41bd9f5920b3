"""Response bodies of the conversation routes."""

from __future__ import annotations

import uuid
from datetime import date, datetime
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


class ConversationOut(BaseModel):
    """A conversation as the backend's record of its messages has it."""

    conversation_id: str
    channel: str = Field(description="the Rasa input channel: sms, webchat, voice, alexa, rest")
    profile_id: uuid.UUID
    started: datetime = Field(description="its first message in the period")
    last: datetime = Field(description="its latest message in the period")
    messages: int
    intents: list[str] = Field(description="what the bot understood, in order, each once")
    fell_back: bool = Field(description="the bot did not understand a message (nlu_fallback)")
    handed_off: bool = Field(description="it was handed to a person")


class ConversationList(BaseModel):
    """Conversations with a message in the period, the latest first."""

    items: list[ConversationOut]


class DailyCount(BaseModel):
    day: date
    count: int


class OverviewOut(BaseModel):
    """The period's figures (days in UTC)."""

    since: datetime
    until: datetime
    conversations: int
    messages: int
    conversations_by_channel: dict[str, list[DailyCount]]
    top_intents: list[tuple[str, int]]
    fallback_rate: float | None = Field(description="of messages, the bot did not understand")
    handoffs: int
    handoff_rate: float | None = Field(description="hand-offs per conversation")
    opt_ins: list[DailyCount] = Field(description="marketing consent granted or confirmed")
    opt_outs: list[DailyCount] = Field(description="marketing consent withdrawn")
    qualified_leads: list[DailyCount]
    demos_booked: list[DailyCount]
