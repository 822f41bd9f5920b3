"""The web chat's backend half: the widget script, session tokens (issued, renewed,
expired, forged), a visitor's own history read from Rasa, and cross-origin access."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from backend.api.app import create_app
from backend.api.keys import SETTINGS
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.settings import Settings
from backend.webchat.sessions import AUDIENCE, signing_secret, transcript

SECRET = "backend-tests-webchat-secret-" + "x" * 36  # 64 bytes: long enough for HS512 too
RASA_TOKEN = "rasa-token-for-tests"
SESSIONS = "/chat/sessions"
HISTORY = "/chat/history"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient]]


@dataclass
class FakeRasa:
    """The bot's `GET /webhooks/conversations/{id}/tracker` (Rasa's tracker, read under
    the conversation's lock: tests/bot/test_conversation_batch.py), holding one tracker
    per conversation."""

    trackers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    asked_for: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/webhooks/conversations/{id}/tracker", self.tracker)
        return app

    async def tracker(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            return web.json_response({"message": "no token"}, status=401)
        conversation = request.match_info["id"]
        self.asked_for.append(conversation)
        return web.json_response(
            {"sender_id": conversation, "events": self.trackers.get(conversation, [])}
        )


@dataclass
class Chat:
    client: TestClient
    rasa: FakeRasa
    clock: FixedClock

    async def start(self, token: str | None = None, **extra: Any) -> tuple[int, dict[str, Any]]:
        body = {"token": token} if token is not None else {}
        response = await self.client.post(SESSIONS, json=body | extra)
        return response.status, await response.json()

    async def history(self, token: str | None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        response = await self.client.get(HISTORY, headers=headers)
        return response.status, await response.json()


@pytest.fixture
async def chat(
    settings: Settings,
    clock: FixedClock,
    aiohttp_client: ClientFactory,
    aiohttp_server: ServerFactory,
) -> Chat:
    rasa = FakeRasa()
    server = await aiohttp_server(rasa.app())
    configured = settings.model_copy(
        update={
            "webchat_secret": SecretStr(SECRET),
            "rasa_port": server.port,
            "rasa_token": SecretStr(RASA_TOKEN),
        }
    )
    return Chat(await aiohttp_client(create_app(configured, clock)), rasa, clock)


def claims_of(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=["HS256"], audience=AUDIENCE, options={"verify_exp": False}
    )
    return decoded


def forge(session_id: str, secret: str = SECRET, **claims: Any) -> str:
    body = {"sub": session_id, "aud": AUDIENCE, "iat": 1_700_000_000, "exp": 4_000_000_000}
    return jwt.encode(body | claims, secret, algorithm="HS256")


# --- tokens ------------------------------------------------------------------------------


async def test_a_new_visitor_gets_a_session_and_a_token_that_lasts_30_days(chat: Chat) -> None:
    status, session = await chat.start()
    assert status == 201
    assert len(session["session_id"]) == 32
    assert session["socket_url"] == chat.client.app[SETTINGS].rasa_url
    claims = claims_of(session["token"])
    now = int(chat.clock.now().timestamp())
    assert claims == {
        "sub": session["session_id"],
        "aud": "parley:webchat",
        "iat": now,
        "exp": now + 30 * 24 * 3600,
    }
    assert session["expires_at"] == "2026-04-01T09:30:00Z"
    other_status, other = await chat.start()
    assert other_status == 201 and other["session_id"] != session["session_id"]


async def test_a_still_valid_token_is_renewed_for_the_same_session(chat: Chat) -> None:
    _, first = await chat.start()
    chat.clock.advance(timedelta(days=29))
    status, renewed = await chat.start(first["token"])
    assert status == 200
    assert renewed["session_id"] == first["session_id"]
    assert renewed["expires_at"] == "2026-04-30T09:30:00Z"
    chat.clock.advance(timedelta(days=2))  # past the first token's expiry
    assert (await chat.start(renewed["token"]))[0] == 200


async def test_an_expired_token_is_neither_renewed_nor_lets_anyone_read_the_history(
    chat: Chat,
) -> None:
    _, session = await chat.start()
    chat.clock.advance(timedelta(days=30))
    status, problem = await chat.start(session["token"])
    assert status == 401
    assert problem["type"] == "urn:parley:problem:invalid-chat-token"
    assert "expired" in problem["detail"]
    assert (await chat.history(session["token"]))[0] == 401
    assert chat.rasa.asked_for == []


@pytest.mark.parametrize(
    "token",
    [
        forge("someone", secret="another-secret-of-32-bytes-or-more-here"),
        forge("someone", aud="parley:something-else"),
        forge("someone", exp=1_700_000_001),
        forge(""),
        jwt.encode({"aud": AUDIENCE, "iat": 1, "exp": 4_000_000_000}, SECRET, algorithm="HS256"),
        jwt.encode({"sub": "someone", "aud": AUDIENCE, "iat": 1, "exp": 4_000_000_000}, key="",
                   algorithm="none"),
        jwt.encode({"sub": "someone", "aud": AUDIENCE, "iat": 1, "exp": 4_000_000_000}, SECRET,
                   algorithm="HS512"),
        "not-a-token",
        "",
    ],
    ids=["forged", "other-audience", "expired", "no-session", "no-sub", "unsigned", "hs512",
         "garbage", "empty"],
)  # fmt: skip
async def test_a_forged_or_broken_token_gets_nothing(chat: Chat, token: str) -> None:
    status, problem = await chat.start(token)
    assert status == 401, problem
    assert problem["type"] == "urn:parley:problem:invalid-chat-token"
    assert token not in json.dumps(problem) or token == ""
    assert (await chat.history(token))[0] == 401
    assert chat.rasa.asked_for == []


async def test_bad_session_requests_are_problems_not_errors(chat: Chat) -> None:
    status, problem = await chat.start(surprise=1)
    assert (status, problem["errors"][0]["pointer"]) == (422, "/surprise")
    response = await chat.client.post(SESSIONS, data="{", headers={"Content-Type": "text/plain"})
    assert response.status == 415
    response = await chat.client.post(
        SESSIONS, data="{", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert response.content_type == "application/problem+json"


def test_the_signing_secret_is_derived_from_the_secret_key_unless_set(settings: Settings) -> None:
    derived = signing_secret(settings)
    assert derived == signing_secret(settings.model_copy())
    assert derived != settings.secret_key.get_secret_value()  # type: ignore[union-attr]
    other_key = settings.model_copy(update={"secret_key": SecretStr("another-key")})
    assert signing_secret(other_key) != derived
    assert (
        signing_secret(settings.model_copy(update={"webchat_secret": SecretStr(SECRET)})) == SECRET
    )


# --- history -----------------------------------------------------------------------------


def user(text: str, intent: str = "greet", at: float = 1.0) -> dict[str, Any]:
    return {"event": "user", "timestamp": at, "text": text,
            "parse_data": {"intent": {"name": intent}}, "input_channel": "webchat"}  # fmt: skip


def bot(text: str | None, at: float = 2.0, **data: Any) -> dict[str, Any]:
    return {"event": "bot", "timestamp": at, "text": text, "data": data}


ADA = [
    {"event": "action", "timestamp": 0.5, "name": "action_session_start"},
    {"event": "session_started", "timestamp": 0.5},
    bot("I'm a bot.", at=0.6),
    user("/session_start", intent="session_start", at=0.4),
    user("what plans do you have", intent="list_products"),
    bot(
        "We offer Starter and Team.",
        buttons=[
            {"title": "Team", "payload": '/ask_product{"product":"team"}'},
            {"title": "Starter", "payload": '/ask_product{"product":"starter"}'},
        ],
    ),
    user('/ask_product{"product":"team"}', intent="ask_product", at=3.0),
    bot("Team: for growing teams.", at=4.0, image="https://example.com/team.png"),
    user("EXTERNAL: follow_up", intent="follow_up", at=5.0),
    bot(
        "Still thinking about Team?", at=6.0, quick_replies=[{"title": "Yes", "payload": "/affirm"}]
    ),
    {"event": "slot", "timestamp": 6.0, "name": "product", "value": "team"},
]


def test_the_transcript_shows_what_the_visitor_saw() -> None:
    assert transcript(ADA) == [
        {"sender": "bot", "text": "I'm a bot.", "timestamp": 0.6},
        {"sender": "user", "text": "what plans do you have", "timestamp": 1.0},
        {"sender": "bot", "text": "We offer Starter and Team.", "timestamp": 2.0, "buttons": [
            {"title": "Team", "payload": '/ask_product{"product":"team"}'},
            {"title": "Starter", "payload": '/ask_product{"product":"starter"}'},
        ]},
        {"sender": "user", "text": "Team", "timestamp": 3.0},
        {"sender": "bot", "text": "Team: for growing teams.", "timestamp": 4.0},
        {"sender": "bot", "image": "https://example.com/team.png", "timestamp": 4.0},
        {"sender": "bot", "text": "Still thinking about Team?", "timestamp": 6.0,
         "quick_replies": [{"title": "Yes", "payload": "/affirm"}]},
    ]  # fmt: skip


def test_a_conversation_nobody_has_written_in_has_no_transcript() -> None:
    """Rasa answers a tracker request for an unknown conversation with a session start
    (and its greeting) that it does not keep."""
    assert transcript([ADA[0], ADA[1], ADA[2]]) == []


async def test_a_visitor_reads_their_own_conversation_and_only_theirs(chat: Chat) -> None:
    _, ada = await chat.start()
    _, bob = await chat.start()
    chat.rasa.trackers[ada["session_id"]] = ADA
    chat.rasa.trackers[bob["session_id"]] = [user("my secret"), bot("Noted.")]

    status, history = await chat.history(ada["token"])
    assert status == 200
    assert history["session_id"] == ada["session_id"]
    assert [m.get("text") for m in history["messages"]] == [
        "I'm a bot.", "what plans do you have", "We offer Starter and Team.", "Team",
        "Team: for growing teams.", None, "Still thinking about Team?",
    ]  # fmt: skip
    assert history["messages"][5] == {
        "sender": "bot", "image": "https://example.com/team.png", "timestamp": 4.0,
    }  # fmt: skip
    assert chat.rasa.asked_for == [ada["session_id"]]
    assert "my secret" not in json.dumps(history)


async def test_history_needs_a_chat_token_not_an_api_token(
    chat: Chat, issue_token: Callable[..., Awaitable[str]]
) -> None:
    assert (await chat.history(None))[0] == 401
    response = await chat.client.get(HISTORY)
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="parley-webchat"'
    assert (await chat.history(await issue_token(Role.ADMIN)))[0] == 401
    assert chat.rasa.asked_for == []


async def test_history_is_a_503_problem_when_rasa_is_unreachable(
    settings: Settings, clock: FixedClock, aiohttp_client: ClientFactory
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = settings.model_copy(
        update={
            "webchat_secret": SecretStr(SECRET),
            "rasa_port": port,
            "rasa_token": SecretStr(RASA_TOKEN),
        }
    )
    chat = Chat(await aiohttp_client(create_app(down, clock)), FakeRasa(), clock)
    _, session = await chat.start()
    status, problem = await chat.history(session["token"])
    assert status == 503
    assert problem["type"] == "urn:parley:problem:rasa-unavailable"


# --- the widget, the demo page, cross-origin -------------------------------------------


async def test_the_widget_is_one_javascript_file_anyone_may_load(chat: Chat) -> None:
    response = await chat.client.get("/chat")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert response.charset == "utf-8"
    source = await response.text()
    assert "EIO=4" in source and "transport=websocket" in source
    assert "innerHTML" not in source


async def test_the_demo_page_carries_the_one_script_tag(chat: Chat) -> None:
    response = await chat.client.get("/chat/demo")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    assert '<script src="/chat" data-title="Chat with Brightdesk" async></script>' in page
    assert page.count("<script") == 1


async def test_a_page_on_any_origin_may_start_a_session_and_read_its_history(
    chat: Chat,
) -> None:
    origin = {"Origin": "https://shop.example"}
    preflight = await chat.client.options(
        HISTORY,
        headers=origin | {"Access-Control-Request-Method": "GET",
                          "Access-Control-Request-Headers": "authorization"},
    )  # fmt: skip
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    started = await chat.client.post(SESSIONS, json={}, headers=origin)
    assert started.status == 201
    assert started.headers["Access-Control-Allow-Origin"] == "*"
    refused = await chat.client.get(HISTORY, headers=origin)
    assert refused.status == 401
    assert refused.headers["Access-Control-Allow-Origin"] == "*"  # the page can read why
    assert "Access-Control-Allow-Origin" not in (await chat.client.get("/health")).headers


async def test_only_listed_origins_may_start_sessions_when_a_list_is_set(
    settings: Settings, clock: FixedClock, aiohttp_client: ClientFactory
) -> None:
    listed = settings.model_copy(
        update={"webchat_secret": SecretStr(SECRET),
                "webchat_allowed_origins": "https://shop.example, https://www.example"}
    )  # fmt: skip
    client = await aiohttp_client(create_app(listed, clock))
    ok = await client.post(SESSIONS, json={}, headers={"Origin": "https://www.example"})
    assert ok.status == 201
    assert ok.headers["Access-Control-Allow-Origin"] == "https://www.example"
    assert ok.headers["Vary"] == "Origin"
    other = await client.post(SESSIONS, json={}, headers={"Origin": "https://evil.example"})
    assert other.status == 403
    assert (await other.json())["type"] == "urn:parley:problem:origin-not-allowed"
    assert "Access-Control-Allow-Origin" not in other.headers
    # The demo page is served by the backend itself: its own origin is always allowed.
    own = f"http://{client.server.host}:{client.server.port}"
    assert (await client.post(SESSIONS, json={}, headers={"Origin": own})).status == 201
    # Servers and curl send no Origin: CORS is a browser's matter.
    assert (await client.post(SESSIONS, json={})).status == 201


async def test_the_web_chat_routes_are_public_and_documented(chat: Chat) -> None:
    spec = await (await chat.client.get("/api/v1/openapi.json")).json()
    for path, method in [("/chat", "get"), ("/chat/demo", "get"), (SESSIONS, "post"),
                         (HISTORY, "get")]:  # fmt: skip
        operation = spec["paths"][path][method]
        assert operation["security"] == [] and operation["tags"] == ["web chat"], path
    created = spec["paths"][SESSIONS]["post"]["responses"]["201"]["content"]
    assert created["application/json"]["schema"]["$ref"].endswith("/ChatSessionOut")
