"""Event routes: report what people did (one event or a batch), list a profile's events."""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import Discriminator, Tag, TypeAdapter
from sqlalchemy.exc import IntegrityError

from backend.api.bodies import query_int, read_body_as, respond
from backend.api.keys import CALLER, CLOCK, DIRECTORY, SEQUENCES, SESSIONS
from backend.api.problems import invalid_fields
from backend.core.logs import get_logger
from backend.events import recording as events
from backend.events.schemas import (
    EventBatch,
    EventIn,
    EventOut,
    EventOutcome,
    EventPage,
    EventsAccepted,
)
from backend.people.routes import live_profile, normalised_address

log = get_logger(__name__)


def _batch_or_one(value: Any) -> str:
    return "~batch" if isinstance(value, dict) and "events" in value else "~event"


EventsBody: TypeAdapter[EventBatch | EventIn] = TypeAdapter(
    Annotated[
        Annotated[EventBatch, Tag("~batch")] | Annotated[EventIn, Tag("~event")],
        Discriminator(_batch_or_one),
    ]
)


def event_recorder(request: web.Request) -> events.EventRecorder:
    sequences = request.app[SEQUENCES]
    return events.EventRecorder(request.app[DIRECTORY], sequences)


async def record_events(request: web.Request) -> web.Response:
    body = await read_body_as(request, EventsBody)
    batch = body.events if isinstance(body, EventBatch) else [body]

    def pointer(index: int, path: str) -> str:
        return f"/events/{index}{path}" if isinstance(body, EventBatch) else path

    now = request.app[CLOCK].now()
    late = [
        (pointer(i, "/occurred_at"), "is in the future")
        for i, e in enumerate(batch)
        if e.occurred_at and (e.occurred_at - now).total_seconds() > events.CLOCK_SKEW_SECONDS
    ]
    if late:
        raise invalid_fields(late)
    incoming = [
        events.Incoming(
            type=e.type,
            properties=e.properties,
            occurred_at=e.occurred_at,
            idempotency_key=e.idempotency_key,
            profile_id=e.profile_id,
            identity=(
                e.identity.kind,
                normalised_address(
                    request, e.identity.kind, e.identity.address, pointer(i, "/identity/address")
                ),
            )
            if e.identity
            else None,
        )
        for i, e in enumerate(batch)
    ]
    # A concurrent request may store the same new idempotency key first: try again once,
    # and the second time the key is seen as a duplicate.
    recorder = event_recorder(request)
    for attempt in (1, 2):
        try:
            async with request.app[SESSIONS].begin() as session:
                outcomes = await recorder.record(session, incoming, request[CALLER])
            break
        except events.UnknownProfiles as unknown:
            raise invalid_fields(
                [(pointer(i, "/profile_id"), "there is no such profile") for i in unknown.indexes]
            ) from unknown
        except IntegrityError:
            if attempt == 2:
                raise
    stored = sum(o.status == "stored" for o in outcomes)
    out = EventsAccepted(
        stored=stored,
        duplicates=len(outcomes) - stored,
        results=[
            EventOutcome(status=o.status, id=o.event_id, profile_id=o.profile_id) for o in outcomes
        ],
    )
    log.info("events.recorded", stored=out.stored, duplicates=out.duplicates)
    return respond(out)


async def list_events(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 500)
    before = query_int(request, "before", None, 1, 2**62)
    assert limit is not None
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        rows = await events.recent(session, profile.id, limit, before)
    items = [EventOut.model_validate(r, from_attributes=True) for r in rows]
    return respond(EventPage(items=items, next=items[-1].id if len(items) == limit else None))
