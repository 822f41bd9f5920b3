"""The two-stage fallback: ask to rephrase after one misunderstanding, offer a person
after two in a row. The bot never answers a misunderstanding with silence or a loop."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher


def misunderstandings_in_a_row(tracker: Tracker) -> int:
    count = 0
    for event in reversed(tracker.events):
        if event.get("event") != "user":
            continue
        intent = (event.get("parse_data") or {}).get("intent", {}).get("name")
        if intent != "nlu_fallback":
            break
        count += 1
    return count


class ActionFallback(Action):
    def name(self) -> str:
        return "action_fallback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        stage = "offer_person" if misunderstandings_in_a_row(tracker) >= 2 else "rephrase"
        return [SlotSet("fallback", stage)]
