"""Demo routes: the bookings in a time range (to offer free slots), a person's upcoming
demos, and booking, moving and cancelling one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web

from backend.api.bodies import read_body, respond, row_by_id
from backend.api.keys import CALLER, CLOCK, DIRECTORY, SESSIONS
from backend.api.problems import Problem
from backend.core.models import Demo
from backend.demos import bookings as demos
from backend.demos.schemas import DemoIn, DemoList, DemoMove, DemoOut
from backend.events.routes import event_recorder
from backend.people.routes import live_profile


def _out(demo: Demo) -> DemoOut:
    return DemoOut.model_validate(demo, from_attributes=True)


def _taken(error: demos.SlotTaken) -> Problem:
    return Problem(409, f"A demo is already booked at {error}.", type_="slot-taken")


def _time(request: web.Request, name: str, default: datetime) -> datetime:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise Problem(
            400,
            f"query parameter {name!r} must be a date and time with a zone, "
            "e.g. 2026-12-01T00:00:00Z",
            type_="invalid-query",
        )
    return value


async def list_demos(request: web.Request) -> web.Response:
    now = request.app[CLOCK].now()
    start = _time(request, "from", now)
    end = _time(request, "to", start + timedelta(days=14))
    if not start < end or (end - start).days > 92:
        raise Problem(
            400, "'to' must be after 'from', at most 92 days later", type_="invalid-query"
        )
    async with request.app[SESSIONS]() as session:
        rows = await demos.booked(session, start, end)
        return respond(DemoList(items=[_out(d) for d in rows]))


async def profile_demos(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        rows = await demos.of_profile(session, profile.id, request.app[CLOCK].now())
        return respond(DemoList(items=[_out(d) for d in rows]))


async def book_demo(request: web.Request) -> web.Response:
    body = await read_body(request, DemoIn)
    if body.starts_at <= request.app[CLOCK].now():
        raise Problem(422, "/starts_at: is in the past", type_="invalid-body",
                      errors=[{"pointer": "/starts_at", "detail": "is in the past"}])  # fmt: skip
    async with request.app[SESSIONS].begin() as session:
        directory = request.app[DIRECTORY]
        profile = await directory.resolve(session, body.profile_id)
        if profile is None:
            raise Problem(404, f"There is no profile {body.profile_id}.", type_="profile-not-found")
        try:
            demo = await demos.book(
                session, event_recorder(request), request[CALLER], profile.id,
                body.starts_at.astimezone(UTC), body.minutes, body.conversation_id,
            )  # fmt: skip
        except demos.SlotTaken as taken:
            raise _taken(taken) from taken
        return respond(_out(demo), status=201)


async def move_demo(request: web.Request) -> web.Response:
    body = await read_body(request, DemoMove)
    async with request.app[SESSIONS].begin() as session:
        demo = await row_by_id(request, session, Demo, "demo", "demo-not-found")
        if demo.status != "booked":
            raise Problem(409, "This demo was cancelled.", type_="demo-cancelled")
        try:
            await demos.move(
                session,
                event_recorder(request),
                request[CALLER],
                demo,
                body.starts_at.astimezone(UTC),
            )
        except demos.SlotTaken as taken:
            raise _taken(taken) from taken
        return respond(_out(demo))


async def cancel_demo(request: web.Request) -> web.Response:
    async with request.app[SESSIONS].begin() as session:
        demo = await row_by_id(request, session, Demo, "demo", "demo-not-found")
        if demo.status == "booked":
            await demos.cancel(session, event_recorder(request), request[CALLER], demo)
        return respond(_out(demo))
