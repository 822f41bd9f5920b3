"""Sequence routes: the follow-up sequences loaded from data/sequences/, enrolling a
person into one through the API, and a sequence's results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from backend.api.bodies import read_body, respond
from backend.api.keys import CALLER, CLOCK, DIRECTORY, SEQUENCES, SESSIONS
from backend.api.problems import Problem
from backend.core import audit
from backend.sequences import holds
from backend.sequences import results as sequence_results
from backend.sequences.definition import EventTrigger, SequenceDefinition, named
from backend.sequences.enrolment import EntryRefused, TriggerEvent, enrol
from backend.sequences.schemas import (
    EnrolmentIn,
    EnrolmentOut,
    SequenceList,
    SequenceOut,
    SequenceStats,
)
from backend.sequences.templates import enrolment_event


def _trigger(sequence: SequenceDefinition) -> str:
    kind, _ = enrolment_event(sequence.trigger)
    if isinstance(sequence.trigger, EventTrigger):
        return f"event:{sequence.trigger.event}"
    return {"intent_expressed": "intent", "form_completed": "form_completed",
            "segment_entered": "segment_entered"}.get(kind, "api")  # fmt: skip


def _out(sequence: SequenceDefinition, on_hold: frozenset[str]) -> SequenceOut:
    return SequenceOut(
        id=sequence.name,
        description=sequence.description,
        paused=sequence.paused,
        on_hold=sequence.name in on_hold,
        trigger=_trigger(sequence),
        steps=[step.id for step in sequence.steps],
    )


async def list_sequences(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        on_hold = await holds.held(session)
    return respond(SequenceList(items=[_out(s, on_hold) for s in request.app[SEQUENCES]]))


async def hold_sequence(request: web.Request) -> web.Response:
    return await _hold_or_resume(request, holds.hold)


async def resume_sequence(request: web.Request) -> web.Response:
    return await _hold_or_resume(request, holds.resume)


async def _hold_or_resume(request: web.Request, change: Any) -> web.Response:
    sequence = _sequence(request)
    async with request.app[SESSIONS].begin() as session:
        await change(session, request.app[CLOCK], sequence.name, request[CALLER])
        on_hold = await holds.held(session)
    return respond(_out(sequence, on_hold))


def _sequence(request: web.Request) -> SequenceDefinition:
    """The sequence the path's `{id}` names, else 404 sequence-not-found."""
    name = request.match_info["id"]
    sequence = named(request.app[SEQUENCES], name)
    if sequence is None:
        raise Problem(404, f"There is no sequence {name!r}.", type_="sequence-not-found")
    return sequence


async def enrol_profile(request: web.Request) -> web.Response:
    sequence = _sequence(request)
    name = sequence.name
    body = await read_body(request, EnrolmentIn)
    clock = request.app[CLOCK]
    async with request.app[SESSIONS].begin() as session:
        profile = await request.app[DIRECTORY].resolve(session, body.profile_id)
        if profile is None:
            raise Problem(404, f"There is no profile {body.profile_id}.", type_="profile-not-found")
        try:
            enrolment = await enrol(
                session, sequence, profile, TriggerEvent("enrolled", body.properties),
                clock, request.app[DIRECTORY].rules,
            )  # fmt: skip
        except EntryRefused as refused:
            raise Problem(409, str(refused), type_=refused.kind) from refused
        await audit.record(
            session, clock, request[CALLER], "enrol_profile", str(profile.id), sequence=name
        )
        out = EnrolmentOut.model_validate(enrolment, from_attributes=True)
    return respond(out, status=201)


def _since(request: web.Request) -> datetime | None:
    """The `since` query parameter: a date and time with a zone, else 400 invalid-query."""
    raw = request.query.get("since")
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
        # A zone is required; a time at the edge of the calendar may not exist in UTC.
        if value.tzinfo is not None:
            return value.astimezone(UTC)
    except (ValueError, OverflowError):
        pass
    raise Problem(
        400,
        "query parameter 'since' must be a date and time with a zone, e.g. 2026-12-01T00:00:00Z",
        type_="invalid-query",
    )


async def sequence_stats(request: web.Request) -> web.Response:
    sequence = _sequence(request)
    since = _since(request)
    async with request.app[SESSIONS]() as session:
        results = await sequence_results.results(session, sequence, since)
    return respond(SequenceStats.model_validate(results, from_attributes=True))
