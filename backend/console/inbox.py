"""The agent inbox: the live queue of conversations waiting for a person, and a
hand-off's page where an agent claims it, answers the customer on their channel,
releases it or hands it back (backend.handoffs.desk does each)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from backend.api.keys import CLOCK, DESK, DIRECTORY, SESSIONS
from backend.api.permissions import allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.console.pages import USER, conversation_lines, render
from backend.conversations.rasa_client import RasaUnavailable
from backend.core.models import ConsoleUser, Handoff, Profile
from backend.handoffs.desk import ReplyRefused
from backend.handoffs.handoff import HandoffConflict, is_call_back
from backend.messaging.door import SendRefused

POLL_SECONDS = 1.0  # how often the inbox's event stream looks for changes
KEEP_ALIVE_SECONDS = 15.0
TRANSCRIPT_LINES_IN_QUEUE = 2
STOPPING = web.AppKey("console_stopping", asyncio.Event)


async def home(request: web.Request) -> web.StreamResponse:
    """Agents start at the inbox; whoever cannot answer hand-offs, at the overview."""
    role = Role(request[USER].role)
    raise web.HTTPSeeOther(
        "/console/inbox" if allowed("list_handoffs", role) else "/console/overview"
    )


async def inbox(request: web.Request) -> web.Response:
    return render(request, "inbox.html", queue=await _queue(request))


async def inbox_queue(request: web.Request) -> web.Response:
    return render(request, "_queue.html", queue=await _queue(request))


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
    lines = await asyncio.gather(*(conversation_lines(request, h.conversation_id) for h in rows))
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


# ---------------------------------------------------------------------------- hand-off


async def handoff_page(request: web.Request) -> web.Response:
    return render(request, "handoff.html", **await _handoff_view(request))


async def handoff_transcript(request: web.Request) -> web.Response:
    handoff = await _handoff(request)
    return render(
        request,
        "_transcript.html",
        lines=await conversation_lines(request, handoff.conversation_id),
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
        return render(request, "_handoff_panel.html", **{**view, "error": error})
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
        "lines": await conversation_lines(request, handoff.conversation_id),
        "mine": mine, "free": handoff.claimed_by_id is None,
        "may_answer": allowed("reply_handoff", role), "may_close": allowed("close_handoff", role),
        "admin": role is Role.ADMIN, "error": request.query.get("error"),
        "waited": request.config_dict[CLOCK].now() - handoff.opened_at,
    }  # fmt: skip
