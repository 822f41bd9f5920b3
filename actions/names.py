"""Remembering a person's name: read it from what they said, store it in their profile.

Sets `name_saved` (saved / not_saved / missing); rules choose the reply.
"""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.backend_action import BackendAction
from actions.logs import get_logger
from bot.backend_client import BackendError, BackendRejected
from bot.identity import identity_of

log = get_logger(__name__)

# When NLU finds no `name` entity, these phrasings still give the name away.
# (Phones type a curly apostrophe; `name_from` straightens it first.)
_WORD = r"[^\W\d_][\w'-]*"
_NAME = rf"(?P<name>{_WORD}(?:\s+{_WORD})?)"
_INTRODUCTION = re.compile(
    rf"\b(?:my name is|my name's|i am|i'm|im|call me|this is|it's|name is)\s+{_NAME}",
    re.IGNORECASE,
)
_BARE_NAME = re.compile(rf"^\s*{_NAME}\s*[.!]?\s*$")
MAX_NAME = 100


def straighten(text: str) -> str:
    """Phones type curly apostrophes (U+2019); the patterns here use straight ones."""
    return text.replace("\u2019", "'")


def name_in(text: str) -> str | None:
    """The name in a short answer or an introduction ("I'm Ada", "call me Jean-Luc")."""
    text = straighten(text)
    match = _INTRODUCTION.search(text) or _BARE_NAME.match(text)
    return _tidy(match.group("name")) if match else None


def name_from(tracker: Tracker) -> str | None:
    """The name the person just gave, if any: NLU's entity, else a known phrasing."""
    entity = next(tracker.get_latest_entity_values("name"), None)
    if entity:
        return _tidy(str(entity))
    return name_in(tracker.latest_message.get("text") or "")


def _tidy(candidate: str) -> str | None:
    candidate = candidate.strip(" .,!?;:\"'")
    if not candidate or len(candidate) > MAX_NAME:
        return None
    # "ada" -> "Ada"; leave "McKenzie" and "de la Cruz" as written.
    return candidate[:1].upper() + candidate[1:] if candidate.islower() else candidate


class ActionRememberName(BackendAction):
    def name(self) -> str:
        return "action_remember_name"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        first_name = name_from(tracker)
        if first_name is None:
            return [SlotSet("name_saved", "missing")]
        kind, address = identity_of(tracker)
        try:
            identified = await self.backend.identify(kind, address, {"first_name": first_name})
        except BackendRejected as error:
            log.warning("name.rejected", conversation=tracker.sender_id, problem=error.problem)
            return [SlotSet("name_saved", "missing")]
        except BackendError as error:
            log.warning("name.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("first_name", first_name), SlotSet("name_saved", "not_saved")]
        log.info("name.saved", conversation=tracker.sender_id, profile_id=identified.profile.id)
        return [
            SlotSet("first_name", first_name),
            SlotSet("profile_id", identified.profile.id),
            SlotSet("name_saved", "saved"),
        ]
