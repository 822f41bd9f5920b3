"""What Rasa's conversation events mean to the backend, read the same way by the bot's
event broker (bot/conversation_events.py, posting to the events API) and by the
backend's consumer of the RabbitMQ queue (backend/rasa_events), so that both report the
same behaviour events under the same idempotency keys and each is stored once whichever
path delivers it first.

A Rasa event, as Rasa publishes it, is a dict with the conversation's `sender_id`, the
event's kind (`event`: user, action, active_loop, slot, bot, ...) and Rasa's
`timestamp`. Two behaviour events come out of a conversation:

- `intent_expressed` {intent, channel, conversation}: every message from the person,
  with the intent NLU found (a FAQ by its full name, `faq/<id>`), the Rasa input
  channel it came on and the conversation's id (so the backend can tell conversations
  apart and count them per channel); not intents triggered from outside;
- `form_completed` {form}: a form that ended itself, its own action having set the
  active loop to null (every question answered); not a form stopped by
  `action_deactivate_loop` (the person said stop, opted out) or by another action.

Each names the person by their channel identity (`kind_of_channel`) and the
conversation id, as the bot's actions do. Whether a loop's end is a completed form
depends on the conversation before it (`ConversationState`: the channel of its latest
message and its latest action), which the bot keeps in memory and the backend reads
from the events it stored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

INTENT_EXPRESSED = "intent_expressed"
FORM_COMPLETED = "form_completed"
# The events that change a conversation's state (the channel of its latest message,
# its latest action).
STATE_EVENTS = frozenset({"user", "action", "restart", "session_started"})
REMEMBERED_CONVERSATIONS = 10_000

# Rasa input channel name -> backend identity kind.
KIND_OF_CHANNEL = {
    "rest": "web",
    "socketio": "web",
    "webchat": "web",  # channels/webchat.py: the session id the backend issued
    "cmdline": "web",
    "alexa": "alexa",
    "voice": "voice",
    "sms": "sms",
}


def kind_of_channel(channel: str | None) -> str:
    """The identity kind of a conversation on this input channel (none: the REST API)."""
    return KIND_OF_CHANNEL.get(channel or "rest", "web")


@dataclass(frozen=True)
class BehaviourEvent:
    """Something the person did in the conversation, naming them by a channel identity."""

    type: str
    kind: str  # identity kind: sms, voice, web, alexa
    address: str  # the conversation id (Rasa's sender id)
    properties: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class UnplacedForm:
    """A form that ended itself in a conversation with no message from the person seen
    (its events appended through Rasa's API): which channel, and so whom, is unknown."""

    conversation: str
    form: str


@dataclass(frozen=True)
class ConversationState:
    kind: str | None = None  # identity kind, once a message from the person was seen
    last_action: str | None = None


def advance(state: ConversationState, event: Mapping[str, Any]) -> ConversationState:
    """The conversation's state after `event`."""
    kind = event.get("event")
    if kind == "user":
        return ConversationState(kind_of_channel(_text(event.get("input_channel"))), None)
    if kind == "action":
        name = event.get("name")
        return ConversationState(state.kind, name if isinstance(name, str) else None)
    if kind in ("restart", "session_started"):
        return ConversationState(state.kind, None)
    return state


def state_after(events: Iterable[Mapping[str, Any]]) -> ConversationState:
    """The state a conversation is in after these events, in their order. The latest
    `user` event and the latest of STATE_EVENTS are enough to know it."""
    state = ConversationState()
    for event in events:
        state = advance(state, event)
    return state


def depends_on_history(event: Mapping[str, Any]) -> bool:
    """Whether what the event means depends on the conversation before it (a loop's
    end: whose action ended it, on which channel)."""
    return event.get("event") == "active_loop" and event.get("name") is None


def meaning(
    state: ConversationState, event: Mapping[str, Any], forms: frozenset[str]
) -> BehaviourEvent | UnplacedForm | None:
    """The behaviour event `event` means, given the conversation's state before it."""
    sender = event.get("sender_id")
    if not isinstance(sender, str) or not sender:
        return None
    kind = event.get("event")
    if kind == "user":
        return _intent(sender, _text(event.get("input_channel")) or "rest", event)
    if depends_on_history(event):
        form = state.last_action
        if form is None or form not in forms:  # action_deactivate_loop, another action
            return None
        if state.kind is None:
            return UnplacedForm(sender, form)
        return BehaviourEvent(
            type=FORM_COMPLETED,
            kind=state.kind,
            address=sender,
            properties={"form": form},
            occurred_at=_when(event.get("timestamp")),
            idempotency_key=behaviour_key(sender, FORM_COMPLETED, form, event.get("timestamp")),
        )
    return None


def _intent(sender: str, channel: str, event: Mapping[str, Any]) -> BehaviourEvent | None:
    if (_mapping(event.get("metadata"))).get("is_external"):
        return None  # an intent triggered through Rasa's API, not said by the person
    intent = _mapping(_mapping(event.get("parse_data")).get("intent"))
    name = intent.get("full_retrieval_intent_name") or intent.get("name")
    if not isinstance(name, str) or not name:
        return None
    return BehaviourEvent(
        type=INTENT_EXPRESSED,
        kind=kind_of_channel(channel),
        address=sender,
        properties={"intent": name, "channel": channel, "conversation": sender},
        occurred_at=_when(event.get("timestamp")),
        idempotency_key=behaviour_key(
            sender, INTENT_EXPRESSED, event.get("message_id") or event.get("timestamp")
        ),
    )


def behaviour_key(*parts: object) -> str:
    """The idempotency key of a behaviour event read from a conversation: the same
    parts give the same key, whichever path reports it."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return f"rasa:{digest[:48]}"


def event_key(event: Mapping[str, Any]) -> str:
    """The idempotency key of a Rasa event itself: its conversation, kind and timestamp,
    and what tells apart events of one kind made in the same instant (a message's id,
    an action's, slot's or loop's name and value, a text). Rasa publishing the same
    event again (a redelivery, `rasa export`) gives the same key."""
    parts = {
        name: event.get(name)
        for name in ("sender_id", "event", "timestamp", "message_id", "name", "value", "text")
        if event.get(name) is not None
    }
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return "rasa-event:" + hashlib.sha256(canonical.encode()).hexdigest()


def _when(timestamp: Any) -> datetime | None:
    if (
        isinstance(timestamp, (int, float))
        and not isinstance(timestamp, bool)
        and math.isfinite(timestamp)
    ):
        try:
            return datetime.fromtimestamp(timestamp, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class ConversationReader:
    """Reads Rasa's published events in order, remembering per conversation (the
    latest `remembered` of them) the state `meaning` needs."""

    def __init__(self, forms: Iterable[str], remembered: int = REMEMBERED_CONVERSATIONS) -> None:
        self.forms = frozenset(forms)
        self._remembered = remembered
        self._states: OrderedDict[str, ConversationState] = OrderedDict()

    def read(self, event: Mapping[str, Any]) -> BehaviourEvent | UnplacedForm | None:
        """The behaviour event this Rasa event means, if any."""
        sender = event.get("sender_id")
        if not isinstance(sender, str) or not sender:
            return None
        state = self._states.pop(sender, None) or ConversationState()
        found = meaning(state, event, self.forms)
        self._states[sender] = advance(state, event)
        if len(self._states) > self._remembered:
            self._states.popitem(last=False)
        return found
