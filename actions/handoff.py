"""Hand-off to a person: mark the conversation in the backend, tell the person when
someone will answer, and pause the bot until the conversation is handed back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.backend_action import BackendAction
from actions.logs import get_logger
from bot.backend_client import BackendError
from bot.business import Business

log = get_logger(__name__)


def when_someone_answers(business: Business, now: datetime) -> str:
    """In words: a person answers soon, or from the next opening of the hand-off hours."""
    local = now.astimezone(business.zone)
    for offset in range(8):
        day = (local + timedelta(days=offset)).date()
        hours = business.hours_on(day.weekday(), "handoff_hours")
        if hours is None:
            continue
        opens = datetime.combine(day, hours[0], tzinfo=business.zone)
        closes = datetime.combine(day, hours[1], tzinfo=business.zone)
        if opens <= local < closes:
            return "Someone usually replies within a few minutes."
        if local < opens:
            label = {0: "today", 1: "tomorrow"}.get(offset, f"on {opens:%A}")
            return (
                f"We're closed right now; someone will reply from {opens:%H:%M} {opens:%Z} {label}."
            )
    return "Someone will reply as soon as we're back."


class ActionHandoff(BackendAction):
    def name(self) -> str:
        return "action_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        reason = (
            "repeated_failure" if tracker.get_slot("fallback") == "offer_person" else "requested"
        )
        channel = tracker.get_latest_input_channel() or "rest"
        try:
            await self.backend.open_handoff(
                tracker.sender_id, channel, reason, tracker.get_slot("profile_id")
            )
        except BackendError as error:
            log.warning("handoff.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("handoff", "failed")]
        eta = when_someone_answers(self.business, self._clock())
        log.info("handoff.opened", conversation=tracker.sender_id, reason=reason)
        return [SlotSet("handoff", "open"), SlotSet("handoff_eta", eta), SlotSet("fallback", None)]


class ActionPauseConversation(Action):
    """The last step of a hand-off: the bot stays silent until it is handed back."""

    def name(self) -> str:
        return "action_pause_conversation"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        return [ConversationPaused()]
