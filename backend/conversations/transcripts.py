"""A conversation as the people who run Parley read it: who said what, when, on which
channel, with what the bot understood (intent, confidence, entities) and the slots it
set, from the events of the conversation's Rasa tracker.

Speakers: the customer; the bot; a follow-up (the bot's words a sequence started,
`action_follow_up`); an agent (a person's reply in a hand-off, whose name is in the
bot event's `metadata.agent`). The moments the bot was paused (a hand-off) and resumed
are notes of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Speaker = Literal["customer", "bot", "follow_up", "agent", "note"]
AGENT_KEY = "agent"  # backend.handoffs.replies puts the agent's name under this key
# The web chat widget's own opening message, and Rasa's external triggers: not said by
# anyone.
_NOT_SAID = ("/session_start", "EXTERNAL: ")


@dataclass(frozen=True)
class Line:
    at: datetime | None
    speaker: Speaker
    text: str
    agent: str | None = None
    channel: str | None = None
    intent: str | None = None
    confidence: float | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)  # set by the bot's turn after it


def transcript(events: list[dict[str, Any]]) -> list[Line]:
    """The lines of a conversation, oldest first (see the module's docstring)."""
    lines: list[Line] = []
    last_action: str | None = None
    for event in events:
        kind = event.get("event")
        at = _when(event.get("timestamp"))
        if kind == "user":
            text = event.get("text")
            if not isinstance(text, str) or text.startswith(_NOT_SAID):
                continue
            parse = event.get("parse_data") or {}
            intent = parse.get("intent") or {}
            lines.append(
                Line(
                    at, "customer", text, channel=event.get("input_channel"),
                    intent=intent.get("name"), confidence=intent.get("confidence"),
                    entities=[
                        {"entity": e.get("entity"), "value": e.get("value")}
                        for e in parse.get("entities") or [] if isinstance(e, dict)
                    ],
                )
            )  # fmt: skip
        elif kind == "bot" and isinstance(event.get("text"), str):
            agent = (event.get("metadata") or {}).get(AGENT_KEY)
            speaker: Speaker = (
                "agent" if agent else "follow_up" if last_action == "action_follow_up" else "bot"
            )
            lines.append(Line(at, speaker, event["text"], agent=agent))
        elif kind == "slot" and lines and event.get("name"):
            lines[-1].slots[str(event["name"])] = event.get("value")
        elif kind == "pause":
            lines.append(Line(at, "note", "The bot paused: the conversation is with a person."))
        elif kind == "resume":
            lines.append(Line(at, "note", "The bot took the conversation back."))
        if kind == "action":
            last_action = event.get("name")
    return lines


def _when(timestamp: Any) -> datetime | None:
    if not isinstance(timestamp, int | float):
        return None
    return datetime.fromtimestamp(timestamp, UTC)
