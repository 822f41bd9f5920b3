"""The web chat channel: Rasa's socket.io channel, bound to the backend's session tokens.

The backend issues each visitor a signed session token (`POST /chat/sessions`, an HS256
JWT whose `sub` is the session id). A socket must present it when it connects
(socket.io `auth: {"token": ...}`); the socket is then bound to that session: it joins
the session's room, and a `session_request` or `user_uttered` naming any other session
is dropped. So no visitor can read or write another visitor's conversation, and every
open tab of one visitor (one room) sees the bot's replies and the backend's later pushes.
A push through Rasa's HTTP API (`?output_channel=webchat` or `latest`, `/execute`,
`/trigger_intent`) reaches the page only if it carries the one door's signature
(`DoorSignedOutput`): follow-ups go through the backend's web door, nothing else.

Events (socket.io, default namespace):
  client -> server  session_request {"session_id"}   answered by session_confirm <id>
                    user_uttered {"message", "session_id"?}
  server -> client  bot_uttered {"text"?, "buttons"?, "quick_replies"?, "image"?,
                                 "attachment"?, "custom"?}
                    user_echo {"text"}  (what the visitor typed in another tab)

With a `redis_url` in the credentials, sockets and pushes are shared between Rasa
replicas through Redis (python-socketio's AsyncRedisManager).

Packets are decoded within bot/json_guard.py's bounds (nesting, number size, lone
surrogates), as Rasa's HTTP bodies are; a socket that sends a packet that cannot be
decoded is disconnected with one log line (python-socketio would log a traceback).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.core.channels.socketio import SocketBlueprint
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from socketio import AsyncRedisManager, AsyncServer
from socketio.exceptions import ConnectionRefusedError as SocketRefused

from bot.json_guard import SocketJson
from bot.settings import settings
from message_rules import door_signature

logger = logging.getLogger(__name__)

# The token contract shared with the backend (backend/webchat/sessions.py): HS256, this audience,
# and the session id in `sub`.
SIGNING_ALGORITHM = "HS256"
AUDIENCE = "parley:webchat"
# What a visitor may type in one message; longer messages are dropped.
MAX_MESSAGE_CHARS = 5000

Clock = Callable[[], float]


class InvalidSessionToken(Exception):
    """Why a token is refused (the message never contains the token)."""


@dataclass(frozen=True)
class ChatSession:
    session_id: str
    expires_at: float


def verify_token(token: object, secret: str | None, now: float) -> ChatSession:
    """The session a token grants, or `InvalidSessionToken` saying why not."""
    if not secret:
        raise InvalidSessionToken("web chat has no signing secret (PARLEY_WEBCHAT_SECRET)")
    if not isinstance(token, str) or not token:
        raise InvalidSessionToken("no token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[SIGNING_ALGORITHM],
            audience=AUDIENCE,
            # Expiry is checked below against the injected clock.
            options={"require": ["sub", "iat", "exp", "aud"], "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise InvalidSessionToken("bad signature") from None
    except jwt.PyJWTError as error:
        raise InvalidSessionToken(type(error).__name__) from None
    session_id, expires_at = claims.get("sub"), claims.get("exp")
    if not isinstance(session_id, str) or not session_id:
        raise InvalidSessionToken("no session id")
    if not isinstance(expires_at, (int, float)) or expires_at <= now:
        raise InvalidSessionToken("expired")
    return ChatSession(session_id, float(expires_at))


class GuardedSocketServer(AsyncServer):
    """python-socketio's server, except for a packet it cannot decode (not socket.io, or
    JSON outside the guard's bounds): python-socketio raises ValueError, which
    python-engineio logs with a traceback, and keeps the socket; this ends the socket.
    (It wraps python-socketio 5's private `_handle_eio_message`; tests/bot/
    test_hostile_json.py fails if that changes.)"""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        try:
            await super()._handle_eio_message(eio_sid, data)
        except ValueError as refused:
            logger.warning("webchat.packet_refused socket=%s reason=%r", eio_sid, str(refused))
            await self.eio.disconnect(eio_sid)


class WebChatOutput(OutputChannel):
    """Sends the bot's messages to every socket in the session's room, one event per
    message, buttons and quick replies kept apart so the widget can show each as such."""

    @classmethod
    def name(cls) -> str:
        return WebChatInput.name()

    def __init__(self, sio: AsyncServer, bot_message_evt: str = "bot_uttered") -> None:
        self.sio = sio
        self.bot_message_evt = bot_message_evt

    async def _send(self, session_id: str, message: dict[str, Any]) -> None:
        await self.sio.emit(self.bot_message_evt, message, room=session_id)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self._send(recipient_id, {"text": text})

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._send(recipient_id, {"text": text, "buttons": _choices(buttons)})

    async def send_quick_replies(
        self, recipient_id: str, text: str, quick_replies: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._send(recipient_id, {"text": text, "quick_replies": _choices(quick_replies)})

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self._send(recipient_id, {"image": image})

    async def send_attachment(self, recipient_id: str, attachment: Any, **kwargs: Any) -> None:
        await self._send(recipient_id, {"attachment": attachment})

    async def send_elements(
        self, recipient_id: str, elements: Iterable[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._send(recipient_id, {"custom": {"elements": list(elements)}})

    async def send_custom_json(
        self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any
    ) -> None:
        await self._send(recipient_id, {"custom": json_message})


class DoorSignedOutput(WebChatOutput):
    """The web chat as Rasa's HTTP API reaches it (`?output_channel=webchat` or `latest`,
    `/execute`, `/trigger_intent`): outside a visitor's own turn, a message reaches
    their page only if it carries the backend's one door's signature (message_rules.
    door_signature), which the door gives only after consent and the guards allowed it.
    Anything else, even from a caller holding Rasa's token, is dropped."""

    def __init__(self, sio: AsyncServer, secret: str | None, bot_message_evt: str) -> None:
        super().__init__(sio, bot_message_evt)
        self.secret = secret

    async def send_response(self, recipient_id: str, message: dict[str, Any]) -> None:
        signature = message.get(door_signature.METADATA_KEY)
        text = message.get("text")
        if isinstance(text, str) and door_signature.is_signed(
            self.secret, recipient_id, text, signature
        ):
            await self.send_text_message(recipient_id, text)
            return
        logger.warning("webchat.push_refused reason=%s", "unsigned" if not signature else "bad")


def _choices(buttons: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {"title": str(button.get("title", "")), "payload": str(button.get("payload", ""))}
        for button in buttons
    ]


class WebChatInput(InputChannel):
    """Rasa's socket.io channel with every socket bound to a backend-issued session."""

    @classmethod
    def name(cls) -> str:
        return "webchat"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        credentials = credentials or {}
        if credentials.get("session_persistence", True) is not True:
            raise ValueError(
                "webchat: session_persistence must be true; a web chat socket always "
                "belongs to the session its token names"
            )
        secret = settings().webchat_secret
        if secret is None:
            logger.warning(
                "webchat.no_secret: PARLEY_WEBCHAT_SECRET is not set, so every web chat "
                "visitor is refused (`parley run` sets it)"
            )
        return cls(
            secret=secret.get_secret_value() if secret else None,
            socketio_path=credentials.get("socketio_path", "/socket.io"),
            user_message_evt=credentials.get("user_message_evt", "user_uttered"),
            bot_message_evt=credentials.get("bot_message_evt", "bot_uttered"),
            redis_url=credentials.get("redis_url") or settings().webchat_redis_url or None,
        )

    def __init__(
        self,
        secret: str | None,
        socketio_path: str = "/socket.io",
        user_message_evt: str = "user_uttered",
        bot_message_evt: str = "bot_uttered",
        redis_url: str | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.secret = secret
        self.socketio_path = socketio_path
        self.user_message_evt = user_message_evt
        self.bot_message_evt = bot_message_evt
        self.redis_url = redis_url
        self.clock = clock
        self.sio: AsyncServer | None = None

    def get_output_channel(self) -> OutputChannel | None:
        """What Rasa's HTTP API uses for `?output_channel=webchat`: the door's signed
        pushes reach every socket of the conversation's session; nothing else does."""
        if self.sio is None:
            return None
        return DoorSignedOutput(self.sio, self.secret, self.bot_message_evt)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        manager = AsyncRedisManager(self.redis_url) if self.redis_url else None
        # Origins are not checked: a socket is only as good as its token, and the
        # token is what the backend (with its CORS setting) hands out.
        # python-socketio sets `json` on its packet classes, so for the whole process.
        # WebSocket only, as the widget speaks: Engine.IO's long-polling transport, which
        # nobody uses, logs a traceback for a malformed payload.
        sio = GuardedSocketServer(
            async_mode="sanic", cors_allowed_origins=[], client_manager=manager, json=SocketJson,
            transports=["websocket"],
        )  # fmt: skip
        self.sio = sio
        webchat: Blueprint = SocketBlueprint(sio, self.socketio_path, "webchat_webhook", __name__)

        @webchat.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @sio.on("connect")
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
            token = auth.get("token") if isinstance(auth, dict) else None
            try:
                session = verify_token(token, self.secret, self.clock())
            except InvalidSessionToken as refused:
                logger.warning("webchat.refused socket=%s reason=%r", sid, str(refused))
                raise SocketRefused("invalid session token") from None
            await sio.save_session(
                sid, {"session_id": session.session_id, "exp": session.expires_at}
            )
            await sio.enter_room(sid, session.session_id)
            logger.debug("webchat.connected socket=%s session=%s", sid, session.session_id)

        @sio.on("session_request")
        async def session_request(sid: str, data: Any = None) -> None:
            session = await self._bound_session(sid, data)
            if session is not None:
                await sio.emit("session_confirm", session, to=sid)

        @sio.on(self.user_message_evt)
        async def user_uttered(sid: str, data: Any = None) -> None:
            session = await self._bound_session(sid, data)
            if session is None or not isinstance(data, dict):
                return
            text = data.get("message")
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_MESSAGE_CHARS:
                logger.warning("webchat.message_dropped socket=%s reason=not_a_message", sid)
                return
            # Other tabs of the same visitor show what was typed here.
            await sio.emit("user_echo", {"text": text}, room=session, skip_sid=sid)
            await on_new_message(
                UserMessage(
                    text,
                    WebChatOutput(sio, self.bot_message_evt),
                    session,
                    input_channel=self.name(),
                )
            )

        return webchat

    async def _bound_session(self, sid: str, data: Any) -> str | None:
        """The session this socket's token granted, if `data` names no other session and
        the token has not expired since the socket connected; otherwise None."""
        assert self.sio is not None
        try:
            bound = await self.sio.get_session(sid)
        except KeyError:  # the socket has just gone
            return None
        session_id: str = bound["session_id"]
        claimed = data.get("session_id") if isinstance(data, dict) else None
        if claimed not in (None, "", session_id):
            logger.warning("webchat.other_session_refused socket=%s session=%s", sid, session_id)
            return None
        if bound["exp"] <= self.clock():
            logger.warning("webchat.expired socket=%s session=%s", sid, session_id)
            await self.sio.disconnect(sid)
            return None
        return session_id
