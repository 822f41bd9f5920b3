"""Web chat sessions: the signed tokens that bind a visitor's browser to one conversation,
and that conversation's transcript as the widget shows it.

A session token is an HS256 JWT: `sub` the session id (which is also the Rasa
conversation id), `aud` "parley:webchat", `iat` and `exp`. The web chat channel in the
bot runtime (channels/webchat.py) checks the same claims with the same secret before a
socket may join the session; docs/channels.md#web-chat describes the contract.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from backend.core import secret_key
from backend.core.clock import Clock
from backend.core.settings import Settings

SIGNING_ALGORITHM = "HS256"
AUDIENCE = "parley:webchat"
# Rasa's intent for "start the conversation": the widget sends it (as "/session_start")
# when a visitor first opens the chat, so the bot introduces itself.
SESSION_START_INTENT = "session_start"
# Rasa marks intents triggered through its HTTP API (pushes) with this prefix.
EXTERNAL_PREFIX = "EXTERNAL: "


def signing_secret(settings: Settings) -> str:
    """PARLEY_WEBCHAT_SECRET, else a key derived from the installation's secret key (so
    tokens outlive a restart). Raises `secret_key.SecretKeyMissing` like the key does."""
    if settings.webchat_secret is not None:
        return settings.webchat_secret.get_secret_value()
    key = secret_key.load_or_create(settings)
    return hmac.new(key, b"parley web chat session tokens", hashlib.sha256).hexdigest()


class InvalidChatToken(Exception):
    """A token that grants nothing; the message says why, never the token."""


@dataclass(frozen=True)
class ChatSession:
    session_id: str
    token: str
    expires_at: datetime


class ChatSessions:
    """Issues, renews and checks session tokens."""

    def __init__(self, secret: str, lifetime: timedelta, clock: Clock) -> None:
        self._secret = secret
        self._lifetime = lifetime
        self._clock = clock

    def start(self) -> ChatSession:
        return self._issue(uuid.uuid4().hex)

    def renew(self, token: str) -> ChatSession:
        """A fresh token for the session a still-valid `token` grants."""
        return self._issue(self.session_of(token))

    def session_of(self, token: str) -> str:
        """The session id a valid token grants, else `InvalidChatToken`."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[SIGNING_ALGORITHM],
                audience=AUDIENCE,
                # Time is checked below, against the injected clock.
                options={"require": ["sub", "iat", "exp", "aud"], "verify_exp": False,
                         "verify_iat": False},
            )  # fmt: skip
        except jwt.InvalidSignatureError:
            raise InvalidChatToken("the token's signature is not ours") from None
        except jwt.PyJWTError as error:
            raise InvalidChatToken(f"the token is not valid ({type(error).__name__})") from None
        session_id, expires = claims["sub"], claims["exp"]
        if not isinstance(session_id, str) or not session_id:
            raise InvalidChatToken("the token names no session")
        if not isinstance(expires, int | float) or expires <= self._clock.now().timestamp():
            raise InvalidChatToken("the token has expired")
        return session_id

    def _issue(self, session_id: str) -> ChatSession:
        now = self._clock.now().astimezone(UTC).replace(microsecond=0)
        expires = int((now + self._lifetime).timestamp())
        claims = {"sub": session_id, "aud": AUDIENCE, "iat": int(now.timestamp()), "exp": expires}
        token = jwt.encode(claims, self._secret, algorithm=SIGNING_ALGORITHM)
        return ChatSession(session_id, token, datetime.fromtimestamp(expires, UTC))


def transcript(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the visitor saw, from a Rasa tracker's events, in the shape the web chat
    channel sends them (one bot message per `bot_uttered`), oldest first.

    A button the visitor pressed shows as its title, as it did when pressed. The
    widget's own "/session_start" and Rasa's pushes' trigger intents are not shown. A
    conversation without any user event has not started (Rasa answers a tracker
    request for an unknown conversation with a session start it does not keep), so
    it has no transcript.
    """
    if not any(event.get("event") == "user" for event in events):
        return []
    messages: list[dict[str, Any]] = []
    choices: dict[str, str] = {}  # payload -> title, of the latest bot message's buttons
    for event in events:
        kind, at = event.get("event"), event.get("timestamp")
        if kind == "user":
            text = event.get("text")
            intent = ((event.get("parse_data") or {}).get("intent") or {}).get("name")
            if (
                not isinstance(text, str)
                or intent == SESSION_START_INTENT
                or text == "/" + SESSION_START_INTENT
                or text.startswith(EXTERNAL_PREFIX)
            ):
                continue
            messages.append({"sender": "user", "text": choices.get(text, text), "timestamp": at})
        elif kind == "bot":
            sent = _as_sent(event.get("text"), event.get("data") or {})
            messages.extend({"sender": "bot", **message, "timestamp": at} for message in sent)
            offered = [c for m in sent for c in m.get("buttons", []) + m.get("quick_replies", [])]
            if offered:
                choices = {choice["payload"]: choice["title"] for choice in offered}
    return messages


def _as_sent(text: Any, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages the channel sends for one bot utterance (Rasa's `send_response`)."""
    sent: list[dict[str, Any]] = []
    if data.get("quick_replies"):
        sent.append({"text": text, "quick_replies": _choices(data["quick_replies"])})
    elif data.get("buttons"):
        sent.append({"text": text, "buttons": _choices(data["buttons"])})
    elif text:
        sent.append({"text": text})
    if data.get("custom"):
        sent.append({"custom": data["custom"]})
    if data.get("image"):
        sent.append({"image": data["image"]})
    if data.get("attachment"):
        sent.append({"attachment": data["attachment"]})
    if data.get("elements"):
        sent.append({"custom": {"elements": data["elements"]}})
    return [{k: v for k, v in message.items() if v is not None} for message in sent]


def _choices(buttons: Any) -> list[dict[str, str]]:
    if not isinstance(buttons, list):
        return []
    return [
        {"title": str(b.get("title", "")), "payload": str(b.get("payload", ""))}
        for b in buttons
        if isinstance(b, dict)
    ]
