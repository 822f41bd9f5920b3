"""The start of each conversation session: the bot says it is a bot before anything
else in a person's first session, whatever their first message is. A follow-up text the
person is now answering (bot/domain/follow_up.yml) opens the new session, so the answer
is read in its light even days later."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActionExecuted, EventType, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher


class ActionSessionStart(Action):
    def name(self) -> str:
        return "action_session_start"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        first = not any(event.get("event") == "session_started" for event in tracker.events)
        events: list[EventType] = [SessionStarted()]
        if (domain.get("session_config") or {}).get("carry_over_slots_to_new_session", True):
            events += [
                SlotSet(name, value)
                for name, value in tracker.current_slot_values().items()
                if value is not None
            ]
        if first:
            # The answer to "are you a bot?"; later answers to it confirm this one.
            dispatcher.utter_message(response="utter_iamabot")
            events.append(SlotSet("disclosed", True))
        if _last_action(tracker) == "action_follow_up":
            events += [
                ActionExecuted("action_follow_up"),
                SlotSet("follow_up", tracker.get_slot("follow_up")),
            ]
        events.append(ActionExecuted("action_listen"))
        return events


def _last_action(tracker: Tracker) -> str | None:
    """The last action before this session start, other than listening."""
    for event in reversed(tracker.events):
        name = event.get("name") if event.get("event") == "action" else None
        if name and name not in ("action_listen", "action_session_start"):
            return str(name)
    return None
