"""The web chat channel, served by a real Sanic server and reached by real socket.io
clients: only a socket whose token the backend signed for its session reaches the
conversation, and the bot's replies and later pushes reach every socket of that session.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
import pytest
import socketio
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from bot.identity import identity_of
from channels.webchat import (
    AUDIENCE,
    InvalidSessionToken,
    WebChatInput,
    WebChatOutput,
    verify_token,
)
from message_rules import door_signature
from tests.bot.conftest import RunningBackend, make_tracker
from tests.servers import free_port, server_missing

SECRET = "test-webchat-secret-of-32-bytes-or-more"
# Several Sanic apps start and stop in one process here; Sanic's start-up rewriting of
# its own methods ("touch-up") supports that only in test mode.
Sanic.test_mode = True
pytestmark = pytest.mark.filterwarnings(
    "ignore:The explicit passing of coroutine objects:DeprecationWarning"  # Sanic 21.12
)
NOW = time.time()


def token(
    session_id: str,
    secret: str = SECRET,
    expires_in: float = 3600,
    **claims: Any,
) -> str:
    body = {
        "sub": session_id,
        "aud": AUDIENCE,
        "iat": int(NOW),
        "exp": int(NOW + expires_in),
        **claims,
    }
    return jwt.encode(body, secret, algorithm="HS256")


@dataclass
class Bot:
    """A Rasa stand-in behind the channel: records every message and answers each one."""

    received: list[UserMessage] = field(default_factory=list)

    async def on_new_message(self, message: UserMessage) -> None:
        self.received.append(message)
        await message.output_channel.send_text_with_buttons(
            message.sender_id,
            f"You said: {message.text}",
            [{"title": "Pricing", "payload": "/ask_price"}],
        )


@dataclass
class Served:
    url: str
    channel: WebChatInput
    bot: Bot


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async with serving(WebChatInput(secret=SECRET)) as running:
        yield running


@asynccontextmanager
async def serving(channel: WebChatInput) -> AsyncIterator[Served]:
    """The channel on a real Sanic server on a free port, its messages going to a `Bot`."""
    bot = Bot()
    app = Sanic(f"webchat_test_{uuid.uuid4().hex}")
    app.blueprint(channel.blueprint(bot.on_new_message))
    port = free_port()
    server: Any = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    assert server is not None
    await server.startup()
    forever = asyncio.ensure_future(server.serve_forever())
    try:
        yield Served(f"http://127.0.0.1:{port}", channel, bot)
    finally:
        server.close()
        await server.wait_closed()
        forever.cancel()


class Visitor:
    """A socket.io client (python-socketio) that records what the server sends it."""

    def __init__(self) -> None:
        self.client = socketio.AsyncClient(reconnection=False)
        self.bot_messages: list[dict[str, Any]] = []
        self.echoes: list[dict[str, Any]] = []
        self.confirmed: list[str] = []
        self.refusals: list[Any] = []
        self.client.on("bot_uttered", self.bot_messages.append)
        self.client.on("user_echo", self.echoes.append)
        self.client.on("session_confirm", self.confirmed.append)
        self.client.on("connect_error", self.refusals.append)

    async def connect(self, url: str, auth: Any) -> None:
        # WebSocket only, as the widget does.
        await self.client.connect(url, transports=["websocket"], auth=auth, wait_timeout=5)

    async def say(self, text: str, session_id: str | None = None) -> None:
        data = {"message": text} | ({"session_id": session_id} if session_id else {})
        await self.client.emit("user_uttered", data)

    async def close(self) -> None:
        await self.client.disconnect()


@pytest.fixture(autouse=True)
def websocket_client_on_rasas_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    """python-socketio's client names `aiohttp.ClientWSTimeout` (aiohttp 3.10+); Rasa pins
    aiohttp 3.9, whose `ws_connect` takes the same close timeout as a plain number."""
    if not hasattr(aiohttp, "ClientWSTimeout"):
        monkeypatch.setattr(
            aiohttp, "ClientWSTimeout", lambda ws_close=10.0, **_: ws_close, raising=False
        )


@pytest.fixture
async def visitors() -> AsyncIterator[Callable[[], Visitor]]:
    made: list[Visitor] = []

    def make() -> Visitor:
        made.append(Visitor())
        return made[-1]

    yield make
    for visitor in made:
        if visitor.client.connected:
            await visitor.close()


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def quietly(seconds: float = 0.5) -> None:
    """Give the server time to (not) act on something."""
    await asyncio.sleep(seconds)


# --- who gets in ---------------------------------------------------------------------


async def test_a_visitor_with_a_valid_token_reaches_their_conversation_and_hears_back(
    served: Served, visitors: Callable[[], Visitor]
) -> None:
    ada = visitors()
    await ada.connect(served.url, {"token": token("session-ada")})
    await ada.client.emit("session_request", {"session_id": "session-ada"})
    await ada.say("hi", session_id="session-ada")

    await eventually(lambda: bool(ada.bot_messages))
    assert ada.confirmed == ["session-ada"]
    [message] = served.bot.received
    assert (message.text, message.sender_id, message.input_channel) == (
        "hi", "session-ada", "webchat",
    )  # fmt: skip
    assert ada.bot_messages == [
        {"text": "You said: hi", "buttons": [{"title": "Pricing", "payload": "/ask_price"}]}
    ]


async def test_a_message_without_a_session_id_goes_to_the_tokens_session(
    served: Served, visitors: Callable[[], Visitor]
) -> None:
    ada = visitors()
    await ada.connect(served.url, {"token": token("session-ada")})
    await ada.say("hello")
    await eventually(lambda: bool(served.bot.received))
    assert served.bot.received[0].sender_id == "session-ada"


@pytest.mark.parametrize(
    ("case", "auth"),
    [
        ("missing", None),
        ("empty", {}),
        ("not a string", {"token": 42}),
        ("garbage", {"token": "not-a-jwt"}),
        ("forged", {"token": token("session-ada", secret="someone-elses-secret-of-32-bytes-or-more")}),
        ("expired", {"token": token("session-ada", expires_in=-1)}),
        ("other audience", {"token": token("session-ada", aud="parley:something-else")}),
        ("unsigned", {"token": jwt.encode({"sub": "session-ada", "aud": AUDIENCE,
                                           "iat": int(NOW), "exp": int(NOW + 60)},
                                          key=None, algorithm="none")}),
    ],
)  # fmt: skip
async def test_a_socket_without_a_valid_token_is_refused_and_reaches_nothing(
    served: Served,
    visitors: Callable[[], Visitor],
    case: str,
    auth: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    intruder = visitors()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await intruder.connect(served.url, auth)
    assert intruder.refusals == [{"message": "invalid session token"}]
    assert not intruder.client.connected
    assert served.bot.received == []
    refusals = [r.getMessage() for r in caplog.records if "webchat.refused" in r.getMessage()]
    assert len(refusals) == 1
    if isinstance(auth, dict) and isinstance(auth.get("token"), str):
        assert auth["token"] not in refusals[0]


async def test_another_visitors_session_can_be_neither_joined_nor_written_nor_read(
    served: Served, visitors: Callable[[], Visitor], caplog: pytest.LogCaptureFixture
) -> None:
    ada, mallory = visitors(), visitors()
    await ada.connect(served.url, {"token": token("session-ada")})
    mallory_token = token("session-mallory")
    await mallory.connect(served.url, {"token": mallory_token})

    await mallory.client.emit("session_request", {"session_id": "session-ada"})
    await mallory.say("I am Ada now", session_id="session-ada")
    await quietly()
    assert mallory.confirmed == []
    assert served.bot.received == []
    warnings = [r.getMessage() for r in caplog.records if "other_session" in r.getMessage()]
    assert len(warnings) == 2
    assert all(mallory_token not in w for w in warnings)

    await ada.say("my secret plans", session_id="session-ada")
    await eventually(lambda: bool(ada.bot_messages))
    await quietly(0.2)
    assert mallory.bot_messages == [] and mallory.echoes == []


async def test_a_socket_whose_token_expires_is_cut_off_at_its_next_message(
    visitors: Callable[[], Visitor],
) -> None:
    clock = [NOW]
    async with serving(WebChatInput(secret=SECRET, clock=lambda: clock[0])) as served:
        ada = visitors()
        await ada.connect(served.url, {"token": token("session-ada", expires_in=60)})
        clock[0] = NOW + 61
        await ada.say("still there?")
        await eventually(lambda: not ada.client.connected)
        assert served.bot.received == []


async def test_without_a_signing_secret_every_socket_is_refused(
    visitors: Callable[[], Visitor],
) -> None:
    async with serving(WebChatInput(secret=None)) as served:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await visitors().connect(served.url, {"token": token("session-ada")})


# --- rooms: tabs and pushes -------------------------------------------------------------


async def test_every_open_tab_of_a_visitor_sees_the_reply_and_what_was_typed(
    served: Served, visitors: Callable[[], Visitor]
) -> None:
    tab1, tab2 = visitors(), visitors()
    await tab1.connect(served.url, {"token": token("session-ada")})
    await tab2.connect(served.url, {"token": token("session-ada")})
    await tab1.say("hi")
    await eventually(lambda: bool(tab1.bot_messages) and bool(tab2.bot_messages))
    assert tab1.bot_messages == tab2.bot_messages
    assert tab2.echoes == [{"text": "hi"}]
    assert tab1.echoes == []


async def test_a_push_the_door_signed_reaches_the_open_page_and_nothing_else_does(
    served: Served, visitors: Callable[[], Visitor]
) -> None:
    """What Rasa's HTTP API does for `?output_channel=webchat` (tracker events with side
    effects, `/execute`, `/trigger_intent`): only the one door's signed push reaches a
    page; a caller holding Rasa's token cannot push anything else."""
    ada, bob = visitors(), visitors()
    await ada.connect(served.url, {"token": token("session-ada")})
    await bob.connect(served.url, {"token": token("session-bob")})
    output = served.channel.get_output_channel()
    assert isinstance(output, WebChatOutput)
    assert output.name() == "webchat"
    text = "Your demo starts in an hour."
    signed = door_signature.sign(SECRET, "session-ada", text)

    await output.send_response("session-ada", {"text": "Buy now!"})
    await output.send_response("session-ada", {"image": "https://example.com/team.png"})
    await output.send_response(
        "session-ada", {"text": "Buy now!", door_signature.METADATA_KEY: "0" * 64}
    )
    # A signature is for one text in one conversation.
    await output.send_response(
        "session-ada", {"text": "Buy now!", door_signature.METADATA_KEY: signed}
    )
    await output.send_response("session-bob", {"text": text, door_signature.METADATA_KEY: signed})
    await output.send_response(
        "session-ada", {"text": text, door_signature.METADATA_KEY: signed, "sequence_step": "s"}
    )
    await eventually(lambda: len(ada.bot_messages) == 1)
    await quietly(0.2)
    assert ada.bot_messages == [{"text": text}]
    assert bob.bot_messages == []


async def test_pushes_reach_a_socket_held_by_another_replica_through_redis(
    visitors: Callable[[], Visitor],
) -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError as error:
        server_missing(
            f"Redis (pushes across replicas) is not reachable at 127.0.0.1:6379: {error}"
        )
    url = "redis://127.0.0.1:6379/0"
    async with (
        serving(WebChatInput(secret=SECRET, redis_url=url)) as first,
        serving(WebChatInput(secret=SECRET, redis_url=url)) as second,
    ):
        ada, session = visitors(), f"session-{uuid.uuid4().hex}"
        await ada.connect(first.url, {"token": token(session)})
        output = second.channel.get_output_channel()
        assert output is not None
        await asyncio.sleep(0.3)  # the replicas' Redis subscriptions settle
        text = "pushed by the other replica"
        await output.send_response(
            session,
            {"text": text, door_signature.METADATA_KEY: door_signature.sign(SECRET, session, text)},
        )
        await eventually(lambda: bool(ada.bot_messages))
        assert ada.bot_messages == [{"text": "pushed by the other replica"}]


# --- the protocol as the browser speaks it, and the token as the backend makes it -------


async def test_a_browser_style_websocket_speaks_the_protocol(served: Served) -> None:
    """What backend/static/chat.js does: Engine.IO 4 over a WebSocket, by hand."""
    ws_url = served.url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        opened = await ws.receive_str()
        assert opened.startswith("0") and "pingInterval" in json.loads(opened[1:])
        await ws.send_str("40" + json.dumps({"token": token("session-ada")}))
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('42["session_request",{"session_id":"session-ada"}]')
        assert await ws.receive_str() == '42["session_confirm","session-ada"]'
        await ws.send_str('42["user_uttered",{"message":"hi","session_id":"session-ada"}]')
        event, message = json.loads((await ws.receive_str())[2:])
        assert event == "bot_uttered" and message["text"] == "You said: hi"

    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as ws:
        await ws.receive_str()
        await ws.send_str(
            "40"
            + json.dumps(
                {"token": token("session-ada", secret="a-forged-secret-of-32-bytes-or-more")}
            )
        )
        refused = await ws.receive_str()
        assert refused.startswith("44")
        assert json.loads(refused[2:]) == {"message": "invalid session token"}


async def test_only_the_websocket_transport_is_served(served: Served) -> None:
    """The widget speaks WebSocket only; long polling, which nothing uses, is refused
    (a malformed polling payload made Engine.IO log a traceback)."""
    polling = served.url + "/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(polling) as opened:
            assert opened.status == 400
        async with http.post(polling, data="\x1e\x1e") as posted:
            assert posted.status == 400


async def test_a_token_the_real_backend_issues_is_accepted(
    backend: RunningBackend, visitors: Callable[[], Visitor]
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{backend.url}/chat/sessions", json={}) as response,
    ):
        assert response.status == 201, await response.text()
        issued = await response.json()
    secret = backend.env["PARLEY_WEBCHAT_SECRET"]
    session = verify_token(issued["token"], secret, time.time())
    assert session.session_id == issued["session_id"]
    with pytest.raises(InvalidSessionToken, match="bad signature"):
        verify_token(issued["token"], "another-secret-of-32-bytes-or-more", time.time())

    async with serving(WebChatInput(secret=secret)) as served:
        ada = visitors()
        await ada.connect(served.url, {"token": issued["token"]})
        await ada.say("hi")
        await eventually(lambda: bool(served.bot.received))
        assert served.bot.received[0].sender_id == issued["session_id"]


# --- configuration ---------------------------------------------------------------------


def test_the_channel_takes_its_secret_from_the_settings_and_insists_on_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bot.settings import settings

    monkeypatch.setenv("PARLEY_WEBCHAT_SECRET", "from-the-environment")
    settings.cache_clear()
    try:
        channel = WebChatInput.from_credentials({"session_persistence": True})
        assert isinstance(channel, WebChatInput)
        assert channel.secret == "from-the-environment"
        assert channel.name() == "webchat"
        with pytest.raises(ValueError, match="session_persistence"):
            WebChatInput.from_credentials({"session_persistence": False})
    finally:
        settings.cache_clear()


def test_a_web_chat_visitor_is_a_web_identity_named_by_their_session() -> None:
    tracker = make_tracker("0f1e2d3c4b5a69788796a5b4c3d2e1f0", channel="webchat")
    assert identity_of(tracker) == ("web", "0f1e2d3c4b5a69788796a5b4c3d2e1f0")
