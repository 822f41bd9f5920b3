"""Conversations as Rasa publishes them: each event the dict `Event.as_dict()` makes
(Rasa 3.6), with the conversation's `sender_id`, in the order Rasa's tracker store
keeps them. As Rasa does, the events an action returns are stamped when the action
makes them, a moment before the `action` event Rasa appends ahead of them."""

from __future__ import annotations

import time
from typing import Any

Event = dict[str, Any]


class Conversation:
    def __init__(self, sender: str, channel: str = "sms", start: float | None = None) -> None:
        self.sender = sender
        self.channel = channel
        self._clock = time.time() - 60 if start is None else start
        self._messages = 0

    def _now(self) -> float:
        self._clock += 0.001
        return self._clock

    def _event(self, kind: str, at: float | None = None, **fields: Any) -> Event:
        return {"sender_id": self.sender, "event": kind,
                "timestamp": self._now() if at is None else at, **fields}  # fmt: skip

    def action(self, name: str) -> Event:
        return self._event("action", name=name, policy=None, confidence=None,
                           action_text=None, hide_rule_turn=False)  # fmt: skip

    def said(self, text: str, intent: str, **intent_fields: Any) -> list[Event]:
        self._messages += 1
        message_id = f"{self.sender}-{self._messages}"
        parse = {"intent": {"name": intent, "confidence": 0.97, **intent_fields},
                 "entities": [], "text": text, "message_id": message_id, "metadata": {}}  # fmt: skip
        said = self._event(
            "user", text=text, parse_data=parse, input_channel=self.channel,
            message_id=message_id, metadata={},
        )  # fmt: skip
        return [self.action("action_listen"), said]

    def bot(self, text: str) -> Event:
        return self._event("bot", text=text, data={}, metadata={})

    def slot(self, name: str, value: Any, at: float | None = None) -> Event:
        return self._event("slot", at, name=name, value=value)

    def loop(self, name: str | None, at: float | None = None) -> Event:
        return self._event("active_loop", at, name=name)

    def ran(self, action: str, *returned: tuple[str, Any]) -> list[Event]:
        """An action that returned events ("loop" or a slot name, with its value): they
        are stamped before the action's own event, which comes first."""
        stamps = [self._now() for _ in returned]
        made = [
            self.loop(value, at) if what == "loop" else self.slot(what, value, at)
            for (what, value), at in zip(returned, stamps, strict=True)
        ]
        return [self.action(action), *made]

    def lead_form_started(self) -> list[Event]:
        return [
            *self.said("we might be interested", "interested"),
            self.action("utter_start_lead"), self.bot("Great, a few questions."),
            *self.ran("lead_form", ("loop", "lead_form"), ("requested_slot", "first_name")),
            self.bot("What's your first name?"),
        ]  # fmt: skip

    def lead_form_finished(self) -> list[Event]:
        """The last answer: the form validates it and, every question answered, ends."""
        return [
            *self.said("in the next month", "inform"),
            *self.ran("lead_form", ("timeline", "this month"), ("loop", None),
                      ("requested_slot", None)),
            *self.ran("action_submit_lead", ("lead_saved", "saved")),
            self.action("utter_lead_saved"), self.bot("Thanks, we'll be in touch."),
        ]  # fmt: skip

    def lead_form_stopped(self) -> list[Event]:
        return [
            *self.said("stop", "stop"),
            *self.ran("action_deactivate_loop", ("loop", None), ("requested_slot", None)),
            self.action("utter_lead_stopped"),
        ]
