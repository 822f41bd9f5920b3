"""Which backend identity a Rasa conversation belongs to.

Rasa knows the input channel and the sender id; the backend knows identities by kind
and address. Web chat and the REST channel use the chat session id as a `web` identity;
the Alexa channel's sender id is the Alexa user id, an `alexa` identity. SMS and phone
calls use the person's E.164 number (the backend treats both as one person).
The Rasa server's event broker (bot/conversation_events.py) uses the same mapping.
"""

from __future__ import annotations

from rasa_sdk import Tracker

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


def identity_of(tracker: Tracker) -> tuple[str, str]:
    return kind_of_channel(tracker.get_latest_input_channel()), tracker.sender_id
