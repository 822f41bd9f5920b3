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
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from backend.api.keys import CLOCK, SESSIONS
from backend.api.permissions import CONSOLE_ROUTES, allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.console import activity, inbox, people, segments, sequences, users
from backend.console.inbox import STOPPING
from backend.console.pages import CSRF, HERE, TEMPLATES, USER, render, templates
from backend.core.logs import get_logger
from backend.core.models import ConsoleUser

log = get_logger(__name__)

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
    app[TEMPLATES] = templates()
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
    return render(request, page, status=status, detail=detail, http_status=status)


# ---------------------------------------------------------------------- sign in and out


async def sign_in_form(request: web.Request) -> web.Response:
    return render(request, "sign_in.html", next=_safe_next(request.query.get("next")), error=None)


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
        return render(request, "sign_in.html", next=target, error=error, http_status=401)
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
    return "/console/"


# ------------------------------------------------------------------------------- inbox


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


# (method, path, handler, the API route whose permission it needs)
PAGES: list[tuple[str, str, Handler, str | None]] = [
    ("GET", "/", inbox.home, None),
    ("POST", "/sign-out", sign_out, None),
    ("GET", "/inbox", inbox.inbox, "list_handoffs"),
    ("GET", "/inbox/queue", inbox.inbox_queue, "list_handoffs"),
    ("GET", "/inbox/events", inbox.inbox_events, "list_handoffs"),
    ("GET", "/handoffs/{id}", inbox.handoff_page, "get_handoff"),
    ("GET", "/handoffs/{id}/transcript", inbox.handoff_transcript, "conversation_transcript"),
    ("POST", "/handoffs/{id}/claim", inbox.claim, "claim_handoff"),
    ("POST", "/handoffs/{id}/release", inbox.release, "release_handoff"),
    ("POST", "/handoffs/{id}/messages", inbox.reply, "reply_handoff"),
    ("POST", "/handoffs/{id}/close", inbox.close, "close_handoff"),
    ("GET", "/people", people.people, "search_profiles"),
    ("GET", "/people/{id}", people.person, "get_profile"),
    ("GET", "/people/{id}/export", people.export, "export_profile"),
    ("POST", "/people/{id}/erase", people.erase, "erase_profile"),
    ("GET", "/conversations/{conversation_id}", people.conversation, "conversation_transcript"),
    ("GET", "/overview", activity.overview, "get_overview"),
    ("GET", "/conversations", activity.conversations, "list_conversations"),
    ("GET", "/segments", segments.segments, "list_segments"),
    ("GET", "/segments/new", segments.new_segment, "list_segments"),
    ("POST", "/segments/preview", segments.preview, "preview_rule"),
    ("POST", "/segments/save", segments.save, "create_segment"),
    ("GET", "/segments/{name}", segments.editor, "get_segment"),
    ("GET", "/segments/{name}/count", segments.segment_count, "count_segment"),
    ("GET", "/segments/{name}/yaml", segments.download, "get_segment"),
    ("GET", "/sequences", sequences.sequences, "list_sequences"),
    ("GET", "/sequences/{name}", sequences.sequence, "sequence_stats"),
    ("POST", "/sequences/{name}/hold", sequences.hold, "hold_sequence"),
    ("POST", "/sequences/{name}/resume", sequences.resume, "resume_sequence"),
]
