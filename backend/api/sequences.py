"""Sequence routes: the follow-up sequences loaded from data/sequences/, and enrolling a
person into one through the API."""

from __future__ import annotations

from aiohttp import web

from backend import audit
from backend.api.bodies import read_body, respond
from backend.api.schemas import EnrolmentIn, EnrolmentOut, SequenceList, SequenceOut
from backend.enrolment import EntryRefused, TriggerEvent, enrol
from backend.keys import CALLER, CLOCK, DIRECTORY, SEQUENCES, SESSIONS
from backend.problems import Problem
from backend.sequences import EventTrigger, SequenceDefinition, enrolment_event


def _trigger(sequence: SequenceDefinition) -> str:
    kind, _ = enrolment_event(sequence.trigger)
    if isinstance(sequence.trigger, EventTrigger):
        return f"event:{sequence.trigger.event}"
    return {"intent_expressed": "intent", "form_completed": "form_completed",
            "segment_entered": "segment_entered"}.get(kind, "api")  # fmt: skip


def _out(sequence: SequenceDefinition) -> SequenceOut:
    return SequenceOut(
        id=sequence.name,
        description=sequence.description,
        paused=sequence.paused,
        trigger=_trigger(sequence),
        steps=[step.id for step in sequence.steps],
    )


async def list_sequences(request: web.Request) -> web.Response:
    return respond(SequenceList(items=[_out(s) for s in request.app[SEQUENCES]]))


async def enrol_profile(request: web.Request) -> web.Response:
    name = request.match_info["id"]
    sequence = next((s for s in request.app[SEQUENCES] if s.name == name), None)
    if sequence is None:
        raise Problem(404, f"There is no sequence {name!r}.", type_="sequence-not-found")
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
