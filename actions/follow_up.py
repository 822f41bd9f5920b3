"""`action_follow_up` marks a follow-up text in a conversation. The backend records it
(with the text and the `follow_up` slot) through Rasa's HTTP API before the text goes;
the bot never sends one itself, so if a policy ever predicts it, it does nothing."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher


class ActionFollowUp(Action):
    def name(self) -> str:
        return "action_follow_up"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        return []
