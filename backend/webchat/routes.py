"""Web chat routes: the widget script, a demo page, session tokens, and a visitor's own
conversation. All are public (no API token): a browser on any page that embeds the
widget calls them, so they answer cross-origin requests (see `cors_middleware`).
"""

from __future__ import annotations

import functools
import html
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from backend.api.bodies import read_body
from backend.api.keys import BUSINESS_TEXTS, CHAT_SESSIONS, RASA, SETTINGS
from backend.api.problems import Handler, Problem
from backend.conversations.rasa_client import RasaUnavailable
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.settings import Settings
from backend.webchat.sessions import ChatSessions, InvalidChatToken, signing_secret, transcript

log = get_logger(__name__)

WIDGET = Path(__file__).resolve().parent.parent / "static" / "chat.js"
# The paths a page on another origin calls, and what its preflight may ask for.
CROSS_ORIGIN_PATHS = frozenset({"/chat/sessions", "/chat/history"})
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="parley-webchat"'}


class ChatSessionRequest(BaseModel):
    """Start a web chat session, or renew the one a still-valid token names."""

    model_config = ConfigDict(extra="forbid")

    token: str | None = Field(
        None,
        max_length=4096,
        description="the session token the browser kept; leave it out to start a session",
    )


class ChatSessionOut(BaseModel):
    """A web chat session and the token that lets a browser into it."""

    session_id: str
    token: str = Field(description="send it as socket.io auth {token} and as a Bearer token")
    expires_at: datetime
    socket_url: str = Field(description="where the browser reaches the chat socket")


class ChatChoice(BaseModel):
    title: str
    payload: str


class ChatMessage(BaseModel):
    """One message as the web chat shows it."""

    sender: Literal["user", "bot"]
    text: str | None = None
    buttons: list[ChatChoice] | None = None
    quick_replies: list[ChatChoice] | None = None
    image: str | None = None
    attachment: JsonValue = None
    custom: JsonValue = None
    timestamp: float | None = None


class ChatHistory(BaseModel):
    """A visitor's own conversation, oldest message first."""

    session_id: str
    messages: list[ChatMessage]


def install(app: web.Application, settings: Settings, clock: Clock) -> None:
    """What the web chat routes need: the token issuer (its secret is derived from the
    installation's secret key unless PARLEY_WEBCHAT_SECRET is set)."""
    app[CHAT_SESSIONS] = ChatSessions(
        signing_secret(settings), timedelta(days=settings.webchat_session_days), clock
    )


async def widget(request: web.Request) -> web.Response:
    return web.Response(
        text=_widget_source(),
        content_type="text/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=300"},
    )


@functools.cache
def _widget_source() -> str:
    return WIDGET.read_text(encoding="utf-8")


async def demo_page(request: web.Request) -> web.Response:
    name = request.app[BUSINESS_TEXTS].name
    page = DEMO_PAGE.format(name=html.escape(name), title=html.escape(f"Chat with {name}"))
    return web.Response(text=page, content_type="text/html", charset="utf-8")


DEMO_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}: web chat demo</title>
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto;
         padding: 0 1rem; color: #1f2933; }}
  code {{ background: #f0f2f5; padding: 0.1em 0.3em; border-radius: 4px; }}
</style>
</head>
<body>
<main>
  <h1>{name}</h1>
  <p>This page is the Parley web chat demo: the chat button in the corner is the whole
  widget, added to the page with one <code>&lt;script&gt;</code> tag.</p>
</main>
<script src="/chat" data-title="{title}" async></script>
</body>
</html>
"""


async def start_session(request: web.Request) -> web.Response:
    sessions, settings = request.app[CHAT_SESSIONS], request.app[SETTINGS]
    body = await read_body(request, ChatSessionRequest)
    if body.token is None:
        session, status = sessions.start(), 201
        log.info("webchat.session_started", session=session.session_id)
    else:
        try:
            session, status = sessions.renew(body.token), 200
        except InvalidChatToken as refused:
            log.info("webchat.renewal_refused", reason=str(refused))
            raise _unauthenticated(f"{refused}; start a new session without a token") from None
    out = ChatSessionOut(
        session_id=session.session_id,
        token=session.token,
        expires_at=session.expires_at,
        socket_url=settings.resolved_webchat_socket_url,
    )
    return web.Response(
        status=status,
        text=out.model_dump_json(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def history(request: web.Request) -> web.Response:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthenticated("Send the chat session token as 'Authorization: Bearer <token>'.")
    try:
        session_id = request.app[CHAT_SESSIONS].session_of(token.strip())
    except InvalidChatToken as refused:
        raise _unauthenticated(str(refused)) from None
    try:
        events = await request.app[RASA].conversation_events(session_id)
    except RasaUnavailable as error:
        log.warning("webchat.history_unavailable", session=session_id, error=str(error))
        raise Problem(
            503, "The conversation cannot be read right now.", type_="rasa-unavailable"
        ) from error
    out = ChatHistory(
        session_id=session_id,
        messages=[ChatMessage.model_validate(m) for m in transcript(events)],
    )
    return web.Response(
        text=out.model_dump_json(exclude_none=True),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _unauthenticated(detail: str) -> Problem:
    return Problem(401, detail, type_="invalid-chat-token", headers=CHALLENGE)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Lets pages on the allowed origins (PARLEY_WEBCHAT_ALLOWED_ORIGINS, default any)
    call the web chat routes. "*" is safe here: the routes read no cookies and every
    answer that matters needs a token the page already holds."""
    if request.path not in CROSS_ORIGIN_PATHS:
        return await handler(request)
    origins = request.app[SETTINGS].webchat_origins
    origin = request.headers.get("Origin")
    same_origin = origin == f"{request.scheme}://{request.host}"
    allowed = "*" if "*" in origins else (origin if origin in origins or same_origin else None)
    if origin is not None and allowed is None:
        problem = Problem(
            403, f"Pages on {origin} may not use this chat.", type_="origin-not-allowed"
        )
        return problem.response(request.path)
    headers = {"Access-Control-Allow-Origin": allowed} if allowed else {}
    if allowed and allowed != "*":
        headers["Vary"] = "Origin"
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(
            status=204,
            headers=headers
            | {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "86400",
            },
        )
    response = await handler(request)
    response.headers.update(headers)
    return response
