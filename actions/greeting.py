"""Greeting: find out whether the backend knows this person.

The action only sets slots (`greeting`, `first_name`, `profile_id`); the rules in
data/rules/greeting.yml choose what the bot says, and the words live in the domain.
"""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.backend_action import BackendAction
from actions.logs import get_logger
from bot.backend_client import BackendError
from bot.identity import identity_of

log = get_logger(__name__)


class ActionGreet(BackendAction):
    def name(self) -> str:
        return "action_greet"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        kind, address = identity_of(tracker)
        try:
            identified = await self.backend.identify(kind, address)
        except BackendError as error:
            log.warning("greet.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("greeting", "unknown")]
        profile = identified.profile
        events: list[EventType] = [SlotSet("profile_id", profile.id)]
        if profile.first_name:
            events += [SlotSet("first_name", profile.first_name), SlotSet("greeting", "returning")]
        else:
            events.append(SlotSet("greeting", "new"))
        log.info("greet", conversation=tracker.sender_id, profile_id=profile.id,
                 returning=bool(profile.first_name))  # fmt: skip
        return events
