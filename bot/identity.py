"""Which backend identity a Rasa conversation belongs to.

Rasa knows the input channel and the sender id; the backend knows identities by kind
and address. Web chat and the REST channel use the chat session id as a `web` identity;
the Alexa channel's sender id is the Alexa user id, an `alexa` identity. SMS and phone
calls use the person's E.164 number (the backend treats both as one person).
The Rasa server's event broker (bot/conversation_events.py) and the backend's consumer
of Rasa's events use the same mapping (message_rules/rasa_events.py).
"""

from __future__ import annotations

from rasa_sdk import Tracker

# The mapping itself is shared with the backend, which reads the same conversations.
from message_rules.rasa_events import kind_of_channel

__all__ = ["identity_of", "kind_of_channel"]


def identity_of(tracker: Tracker) -> tuple[str, str]:
    return kind_of_channel(tracker.get_latest_input_channel()), tracker.sender_id
