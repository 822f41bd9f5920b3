"""The marketer's people pages: search, and a person's page with everything Parley holds
about them (identities, attributes, the score and its reasons, the consent ledger as a
timeline with its evidence, events, sequences, messages and their delivery, their
conversations), and for admins the GDPR export and erasure (backend.people.privacy,
the API's own use cases)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy import select

from backend.api.keys import CLOCK, DIRECTORY, PRIVACY, SCORING, SESSIONS, SETTINGS
from backend.api.permissions import allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.consent import ledger as consent
from backend.console.pages import USER, conversation_lines, render
from backend.core.models import Enrolment, Profile
from backend.events.recording import recent as recent_events
from backend.messaging import history
from backend.people import search as people_search
from backend.people.erasure import CONVERSATION_KINDS
from backend.people.privacy import RasaAway
from backend.scoring import rules as scoring

PAGE_SIZE = 25
SHOWN = 50  # events and messages on a person's page, newest first


async def people(request: web.Request) -> web.Response:
    query = request.query.get("query", "").strip()[:200]
    after = _uuid(request.query.get("after"))
    found: list[Profile] = []
    if query:
        async with request.config_dict[SESSIONS]() as db:
            found = await people_search.search(
                db, query, request.config_dict[SETTINGS].default_phone_region, PAGE_SIZE, after
            )
    more = (
        "/console/people?" + urlencode({"query": query, "after": str(found[-1].id)})
        if len(found) == PAGE_SIZE
        else None
    )
    template = "_people_results.html" if "HX-Request" in request.headers else "people.html"
    return render(
        request, template, section="people", query=query, found=found, more=more,
        notice=request.query.get("notice"),
    )  # fmt: skip


async def person(request: web.Request) -> web.StreamResponse:
    profile_id = _uuid(request.match_info["id"])
    rules, now = request.config_dict[SCORING], request.config_dict[CLOCK].now()
    async with request.config_dict[SESSIONS]() as db:
        found = await request.config_dict[DIRECTORY].get(db, profile_id) if profile_id else None
        if found is None:
            raise Problem(404, "There is no such person.", type_="profile-not-found")
        if found.merged_into_id is not None:
            raise web.HTTPSeeOther(f"/console/people/{found.merged_into_id}")
        view: dict[str, Any] = {
            "person": found,
            "score": scoring.current_score(found, rules, now),
            "reasons": await scoring.explain(db, rules, found.id, now),
            "states": await consent.states(db, found.id),
            "timeline": list(reversed(await consent.ledger(db, found.id))),
            "events": await recent_events(db, found.id, SHOWN),
            "enrolments": list(
                await db.scalars(
                    select(Enrolment)
                    .where(Enrolment.profile_id == found.id)
                    .order_by(Enrolment.enrolled_at.desc())
                )
            ),
            "messages": (await history.of_person(db, found.id, SHOWN))[0],
            "conversations": [
                i for i in found.identities if i.kind in {k.value for k in CONVERSATION_KINDS}
            ],
        }
    role = Role(request[USER].role)
    return render(
        request, "person.html", section="people", **view,
        may_export=allowed("export_profile", role), may_erase=allowed("erase_profile", role),
        error=request.query.get("error"),
    )  # fmt: skip


async def export(request: web.Request) -> web.StreamResponse:
    profile_id = _uuid(request.match_info["id"])
    try:
        document = (
            await request.config_dict[PRIVACY].export(profile_id, request[USER])
            if profile_id
            else None
        )
    except RasaAway as away:
        return _back(request, str(away))
    if document is None:
        raise Problem(404, "There is no such person.", type_="profile-not-found")
    return web.Response(
        text=json.dumps(document, indent=2, default=str), content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="person-{profile_id}.json"'},
    )  # fmt: skip


async def erase(request: web.Request) -> web.StreamResponse:
    profile_id = _uuid(request.match_info["id"])
    if (await request.post()).get("confirm") != "ERASE":
        return _back(request, "Type ERASE to confirm: erasing a person cannot be undone.")
    try:
        erased = (
            await request.config_dict[PRIVACY].erase(profile_id, request[USER])
            if profile_id
            else False
        )
    except RasaAway as away:
        return _back(request, str(away))
    if not erased:
        raise Problem(404, "There is no such person.", type_="profile-not-found")
    raise web.HTTPSeeOther(
        "/console/people?" + urlencode({"notice": "The person was erased everywhere."})
    )


async def conversation(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    return render(
        request, "conversation.html", section="people", conversation_id=conversation_id,
        lines=await conversation_lines(request, conversation_id),
    )  # fmt: skip


def _back(request: web.Request, error: str) -> web.StreamResponse:
    raise web.HTTPSeeOther(
        f"/console/people/{request.match_info['id']}?" + urlencode({"error": error})
    )


def _uuid(raw: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        return None
