"""The console at `/console`: the web pages the people who run Parley use.

Served by the backend as its own aiohttp sub-application, with its own sign-in
(backend.console.users), sessions in an encrypted, HttpOnly, SameSite=Lax cookie
(aiohttp-session; Secure unless PARLEY_CONSOLE_SECURE_COOKIE=false), and a CSRF token on
every form and htmx request. Each page and button names the API route whose permission
it needs: the console obeys the same table as the API (backend.api.permissions), for a
console user's role. What a button does is the same use case the API calls
(backend.handoffs.desk), audited under the console user's e-mail.

Pages are Jinja2 templates rendered on the server; htmx (from npm, pinned in
package-lock.json, served from node_modules with its licence) swaps parts of them; the
inbox learns of new hand-offs through server-sent events.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import phonenumbers
from aiohttp import web
from aiohttp_session import Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from sqlalchemy import select

from backend.api.keys import CLOCK, DESK, DIRECTORY, RASA, SESSIONS
from backend.api.permissions import CONSOLE_ROUTES, allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.console import users
from backend.conversations.rasa_client import RasaUnavailable
from backend.conversations.transcripts import Line, transcript
from backend.core.logs import get_logger
from backend.core.models import ConsoleUser, Handoff, Profile
from backend.handoffs.desk import ReplyRefused
from backend.handoffs.handoff import HandoffConflict, is_call_back
from backend.messaging.door import SendRefused

log = get_logger(__name__)

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
# The files of the pinned npm packages the pages load, each with its licence.
VENDORED: Mapping[str, str] = {
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
    "htmx.LICENSE.txt": "htmx.org/LICENSE",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
    "chart.LICENSE.md": "chart.js/LICENSE.md",
    "kurkle-color.LICENSE.md": "@kurkle/color/LICENSE.md",  # bundled in chart.umd.min.js
    "swagger-ui-bundle.js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger-ui.css": "swagger-ui-dist/swagger-ui.css",
    "swagger-ui.LICENSE.txt": "swagger-ui-dist/LICENSE",
}
OWN_STATIC = frozenset({"console.css", "console.js", "api-reference.js"})
PREFIX = CONSOLE_ROUTES  # route names; the API's bearer-token check leaves these to us
SESSION_HOURS = 12
POLL_SECONDS = 1.0  # how often the inbox's event stream looks for changes
KEEP_ALIVE_SECONDS = 15.0
TRANSCRIPT_LINES_IN_QUEUE = 2

USER = web.RequestKey("console_user", ConsoleUser)
CSRF = web.RequestKey("console_csrf", str)
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
STOPPING = web.AppKey("console_stopping", asyncio.Event)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Console route name -> the API route whose permission it needs (None: anyone signed in).
PERMISSION: dict[str, str | None] = {}
PUBLIC = frozenset({PREFIX + "sign_in_form", PREFIX + "sign_in", PREFIX + "static"})


def cookie_key(secret: bytes) -> bytes:
    """The cookie's encryption key (32 bytes, for Fernet), derived from the installation's
    secret key."""
    return hashlib.sha256(b"parley console sessions\0" + secret).digest()


def console_app(secret: bytes, secure_cookie: bool) -> web.Application:
    storage = EncryptedCookieStorage(
        cookie_key(secret), cookie_name="parley_console", path="/console",
        httponly=True, secure=secure_cookie, samesite="Lax", max_age=SESSION_HOURS * 3600,
    )  # fmt: skip
    app = web.Application(middlewares=[_html_errors, session_middleware(storage), _signed_in])
    app[TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    app[TEMPLATES].filters["waited"] = _waited
    app[TEMPLATES].filters["phone"] = _phone
    app[TEMPLATES].filters["when"] = _when
    app[STOPPING] = asyncio.Event()

    async def stop_streams(app: web.Application) -> None:
        app[STOPPING].set()

    app.on_shutdown.append(stop_streams)
    add = app.router.add_route
    add("GET", "/sign-in", sign_in_form, name=PREFIX + "sign_in_form")
    add("POST", "/sign-in", sign_in, name=PREFIX + "sign_in")
    add("GET", "/static/{name}", static, name=PREFIX + "static")
    for method, path, handler, needs in PAGES:
        name = PREFIX + handler.__name__
        PERMISSION[name] = needs
        add(method, path, handler, name=name)
    return app


# --------------------------------------------------------------------------- middleware


@web.middleware
async def _signed_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every console request: the CSRF token on anything that changes something, and,
    but for the sign-in page and static files, a signed-in user whose role may do it."""
    session = await get_session(request)
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    request[CSRF] = session["csrf"]
    if request.method not in ("GET", "HEAD"):
        await _check_csrf(request, session)
    name = request.match_info.route.name
    if name is None or name in PUBLIC:
        return await handler(request)
    user = await _current_user(request, session)
    if user is None:
        return _to_sign_in(request)
    request[USER] = user
    needs = PERMISSION.get(name)
    if needs is not None and not allowed(needs, Role(user.role)):
        raise Problem(403, f"The role '{user.role}' may not do this.", type_="forbidden")
    return await handler(request)


async def _check_csrf(request: web.Request, session: Session) -> None:
    sent = request.headers.get("X-CSRF-Token")
    if sent is None and request.content_type in (
        "application/x-www-form-urlencoded", "multipart/form-data"
    ):  # fmt: skip
        sent = str((await request.post()).get("csrf", ""))
    if not sent or not secrets.compare_digest(sent, session["csrf"]):
        raise Problem(
            403, "The form is out of date (its CSRF token does not match): reload the page.",
            type_="csrf-failed",
        )  # fmt: skip


async def _current_user(request: web.Request, session: Session) -> ConsoleUser | None:
    user_id, since = session.get("user_id"), session.get("signed_in_at", 0)
    if user_id is None or time.time() - since > SESSION_HOURS * 3600:
        return None
    async with request.config_dict[SESSIONS]() as db:
        user = await db.get(ConsoleUser, uuid.UUID(user_id))
    if user is None or user.disabled_at is not None:
        session.invalidate()
        return None
    return user


def _to_sign_in(request: web.Request) -> web.Response:
    target = "/console/sign-in"
    if request.method == "GET" and "HX-Request" not in request.headers:
        target += "?" + urlencode({"next": request.path_qs})
    if "HX-Request" in request.headers:  # htmx follows this header, not a 303
        return web.Response(status=204, headers={"HX-Redirect": target})
    raise web.HTTPSeeOther(target)


@web.middleware
async def _html_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as a page a person can read (a fragment for htmx), not a problem document."""
    try:
        return await handler(request)
    except Problem as problem:
        return _error_page(request, problem.status, problem.detail or problem.title)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return _error_page(request, error.status, error.reason)


def _error_page(request: web.Request, status: int, detail: str) -> web.Response:
    page = "_error.html" if "HX-Request" in request.headers else "error.html"
    return _render(request, page, status=status, detail=detail, http_status=status)


# ---------------------------------------------------------------------- sign in and out


async def sign_in_form(request: web.Request) -> web.Response:
    return _render(request, "sign_in.html", next=_safe_next(request.query.get("next")), error=None)


async def sign_in(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    email, password = str(form.get("email", "")), str(form.get("password", ""))
    async with request.config_dict[SESSIONS].begin() as db:
        result = await users.sign_in(db, request.config_dict[CLOCK], email, password)
        user_id = str(result.user.id) if result.user else None
    target = _safe_next(str(form.get("next", "")))
    if user_id is None:
        log.info("console.sign_in_refused", locked=result.locked_until is not None)
        error = (
            f"Too many wrong passwords: this account is locked until "
            f"{result.locked_until:%H:%M} UTC."
            if result.locked_until
            else "That e-mail address and password do not match an account."
        )
        return _render(request, "sign_in.html", next=target, error=error, http_status=401)
    session = await new_session(request)  # a new session: none fixed before sign-in survives
    session.update(user_id=user_id, signed_in_at=int(time.time()), csrf=secrets.token_urlsafe(32))
    log.info("console.signed_in", user_id=user_id)
    raise web.HTTPSeeOther(target)


async def sign_out(request: web.Request) -> web.StreamResponse:
    (await get_session(request)).invalidate()
    raise web.HTTPSeeOther("/console/sign-in")


def _safe_next(target: str | None) -> str:
    """Only a console path: never another site (an open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return "/console/inbox"


# ------------------------------------------------------------------------------- inbox


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/inbox")


async def inbox(request: web.Request) -> web.Response:
    return _render(request, "inbox.html", queue=await _queue(request))


async def inbox_queue(request: web.Request) -> web.Response:
    return _render(request, "_queue.html", queue=await _queue(request))


async def inbox_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `queue` (with how many wait) whenever the open hand-offs or
    their claims change, in this process or any other (it reads the database)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                 "X-Accel-Buffering": "no"}
    )  # fmt: skip
    await response.prepare(request)
    stopping = request.config_dict[STOPPING]
    last: list[tuple[Any, ...]] | None = None
    quiet = 0.0
    try:
        while not stopping.is_set():
            async with request.config_dict[SESSIONS]() as db:
                state = [
                    tuple(row)
                    for row in await db.execute(
                        select(Handoff.id, Handoff.claimed_by_id)
                        .where(Handoff.status == "open")
                        .order_by(Handoff.opened_at)
                    )
                ]
            if state != last:
                waiting = sum(1 for _, claimed in state if claimed is None)
                data = json.dumps({"open": len(state), "waiting": waiting})
                await response.write(f"event: queue\ndata: {data}\n\n".encode())
                last, quiet = state, 0.0
            elif quiet >= KEEP_ALIVE_SECONDS:
                await response.write(b": still here\n\n")
                quiet = 0.0
            try:
                await asyncio.wait_for(stopping.wait(), POLL_SECONDS)
            except TimeoutError:
                quiet += POLL_SECONDS
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page was closed
    return response


async def _queue(request: web.Request) -> list[dict[str, Any]]:
    """The open hand-offs, oldest first, each with its person and last lines."""
    async with request.config_dict[SESSIONS]() as db:
        rows = list(
            await db.scalars(
                select(Handoff).where(Handoff.status == "open").order_by(Handoff.opened_at)
            )
        )
        people = await _people(request, db, rows)
    lines = await asyncio.gather(*(_lines(request, h.conversation_id) for h in rows))
    now = request.config_dict[CLOCK].now()
    return [
        {
            "handoff": h, "person": people.get(h.profile_id), "call_back": is_call_back(h),
            "waited": now - h.opened_at,
            "last": None if found is None else found[-TRANSCRIPT_LINES_IN_QUEUE:],
        }
        for h, found in zip(rows, lines, strict=True)
    ]  # fmt: skip


async def _people(
    request: web.Request, db: Any, rows: list[Handoff]
) -> dict[uuid.UUID | None, Profile]:
    ids = {h.profile_id for h in rows if h.profile_id}
    if not ids:
        return {}
    found = await db.scalars(select(Profile).where(Profile.id.in_(ids)))
    return {p.id: p for p in found}


async def _lines(request: web.Request, conversation_id: str) -> list[Line] | None:
    """The conversation's lines, or None if Rasa cannot be read now."""
    try:
        return transcript(await request.config_dict[RASA].conversation_events(conversation_id))
    except RasaUnavailable as error:
        log.warning("console.transcript_unavailable", error=str(error))
        return None


# ---------------------------------------------------------------------------- hand-off


async def handoff_page(request: web.Request) -> web.Response:
    return _render(request, "handoff.html", **await _handoff_view(request))


async def handoff_transcript(request: web.Request) -> web.Response:
    handoff = await _handoff(request)
    return _render(
        request, "_transcript.html", lines=await _lines(request, handoff.conversation_id)
    )


async def claim(request: web.Request) -> web.StreamResponse:
    return await _desk_step(request, lambda desk, h, u: desk.claim(h, u, _take_over(request)))


async def release(request: web.Request) -> web.StreamResponse:
    return await _desk_step(request, lambda desk, h, u: desk.release(h, u))


async def close(request: web.Request) -> web.StreamResponse:
    return await _desk_step(request, lambda desk, h, u: desk.close(h, u))


async def reply(request: web.Request) -> web.StreamResponse:
    body = str((await request.post()).get("body", "")).strip()
    if not body:
        return await _after_step(request, "Write something to send first.")
    if len(body) > 1600:
        return await _after_step(request, "A reply is at most 1,600 characters.")

    async def send(desk: Any, handoff_id: uuid.UUID, user: ConsoleUser) -> Any:
        return await desk.reply(handoff_id, user, body)

    return await _desk_step(request, send)


def _take_over(request: web.Request) -> bool:
    return request.query.get("take_over") == "1" and request[USER].role == "admin"


async def _desk_step(
    request: web.Request, step: Callable[..., Awaitable[Any]]
) -> web.StreamResponse:
    handoff = await _handoff(request)
    error = None
    try:
        await step(request.config_dict[DESK], handoff.id, request[USER])
    except (HandoffConflict, ReplyRefused, SendRefused, PermissionError) as refused:
        error = str(refused)
    except RasaUnavailable as unavailable:
        error = f"The bot could not be reached ({unavailable}); nothing changed. Try again."
    return await _after_step(request, error)


async def _after_step(request: web.Request, error: str | None) -> web.StreamResponse:
    """htmx gets the hand-off's panel again; a plain form post goes back to the page."""
    if "HX-Request" in request.headers:
        view = await _handoff_view(request)
        return _render(request, "_handoff_panel.html", **{**view, "error": error})
    target = f"/console/handoffs/{request.match_info['id']}"
    raise web.HTTPSeeOther(target + ("?" + urlencode({"error": error}) if error else ""))


async def _handoff(request: web.Request) -> Handoff:
    try:
        handoff_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        handoff_id = None
    async with request.config_dict[SESSIONS]() as db:
        handoff = await db.get(Handoff, handoff_id) if handoff_id else None
    if handoff is None:
        raise Problem(404, "There is no such hand-off.", type_="handoff-not-found")
    return handoff


async def _handoff_view(request: web.Request) -> dict[str, Any]:
    handoff = await _handoff(request)
    async with request.config_dict[SESSIONS]() as db:
        person = (
            await request.config_dict[DIRECTORY].get(db, handoff.profile_id)
            if handoff.profile_id
            else None
        )
    user = request[USER]
    mine = handoff.claimed_by_id == user.id
    role = Role(user.role)
    return {
        "handoff": handoff, "person": person, "call_back": is_call_back(handoff),
        "lines": await _lines(request, handoff.conversation_id),
        "mine": mine, "free": handoff.claimed_by_id is None,
        "may_answer": allowed("reply_handoff", role), "may_close": allowed("close_handoff", role),
        "admin": role is Role.ADMIN, "error": request.query.get("error"),
        "waited": request.config_dict[CLOCK].now() - handoff.opened_at,
    }  # fmt: skip


# ---------------------------------------------------------------------- static files


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name in VENDORED:
        path = NODE_MODULES / VENDORED[name]
    elif name in OWN_STATIC:
        path = HERE / "static" / name
    else:
        raise web.HTTPNotFound()
    if not path.is_file():
        log.error("console.asset_missing", asset=name, hint="run `make install` (npm ci)")
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


# ------------------------------------------------------------------------------ helpers


def _render(
    request: web.Request, template: str, http_status: int = 200, **context: Any
) -> web.Response:
    user = request.get(USER)
    page = request.config_dict[TEMPLATES].get_template(template)
    html = page.render(user=user, csrf=request.get(CSRF, ""), **context)
    return web.Response(
        text=html, status=http_status, content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            # Scripts and styles only from the console itself; no framing (clickjacking).
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )  # fmt: skip


def _waited(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def _phone(address: str) -> str:
    try:
        number = phonenumbers.parse(address)
    except phonenumbers.NumberParseException:
        return address
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""


# (method, path, handler, the API route whose permission it needs)
PAGES: list[tuple[str, str, Handler, str | None]] = [
    ("GET", "/", home, None),
    ("POST", "/sign-out", sign_out, None),
    ("GET", "/inbox", inbox, "list_handoffs"),
    ("GET", "/inbox/queue", inbox_queue, "list_handoffs"),
    ("GET", "/inbox/events", inbox_events, "list_handoffs"),
    ("GET", "/handoffs/{id}", handoff_page, "get_handoff"),
    ("GET", "/handoffs/{id}/transcript", handoff_transcript, "conversation_transcript"),
    ("POST", "/handoffs/{id}/claim", claim, "claim_handoff"),
    ("POST", "/handoffs/{id}/release", release, "release_handoff"),
    ("POST", "/handoffs/{id}/messages", reply, "reply_handoff"),
    ("POST", "/handoffs/{id}/close", close, "close_handoff"),
]
