"""Profile routes: identify a person by a channel identity, read, change, merge, export
and erase profiles."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.api.bodies import path_uuid, query_int, query_uuid, read_body, respond
from backend.api.keys import (
    BUSINESS_TEXTS,
    CALLER,
    CLOCK,
    DIRECTORY,
    PRIVACY,
    RETENTION,
    SCORING,
    SESSIONS,
    SETTINGS,
)
from backend.api.problems import Problem, invalid_body, invalid_fields
from backend.core import audit
from backend.core.identities import IdentityKind, InvalidAddress, normalise_address, redact
from backend.core.logs import get_logger
from backend.core.models import Profile, RetentionRun
from backend.people import retention
from backend.people import search as people_search
from backend.people.privacy import RasaAway
from backend.people.schemas import (
    CORE_FIELDS,
    IdentifyRequest,
    IdentifyResult,
    IdentityAdded,
    IdentityIn,
    MergedPointer,
    MergeRequest,
    ProfileFields,
    ProfileOut,
    ProfilePage,
    ProfileUpdate,
    RetentionOut,
    RetentionRunOut,
)
from backend.scoring import rules as scoring

log = get_logger(__name__)


def _not_found(request: web.Request) -> Problem:
    return Problem(
        404, f"There is no profile {request.match_info['id']!r}.", type_="profile-not-found"
    )


async def live_profile(request: web.Request, session: AsyncSession) -> Profile:
    """The profile the path names; a merged profile's id leads to its survivor."""
    profile_id = path_uuid(request, "id", _not_found(request))
    profile = await request.app[DIRECTORY].resolve(session, profile_id)
    if profile is None:
        raise _not_found(request)
    return profile


def profile_out(request: web.Request, profile: Profile) -> ProfileOut:
    return ProfileOut.model_validate(
        {
            **{c.key: getattr(profile, c.key) for c in Profile.__table__.columns},
            "identities": profile.identities,
            "score": scoring.current_score(profile, request.app[SCORING], request.app[CLOCK].now()),
        },
        from_attributes=True,
    )


def normalised_address(request: web.Request, kind: IdentityKind, raw: str, pointer: str) -> str:
    try:
        return normalise_address(kind, raw, request.app[SETTINGS].default_phone_region)
    except InvalidAddress as error:
        raise invalid_fields([(pointer, str(error))]) from error


def _split_attributes(
    request: web.Request, attributes: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Core fields (validated) and free attributes, from one `attributes` object."""
    core = {k: v for k, v in attributes.items() if k in CORE_FIELDS}
    free = {k: v for k, v in attributes.items() if k not in CORE_FIELDS}
    context = {"default_phone_region": request.app[SETTINGS].default_phone_region}
    try:
        fields = ProfileFields.model_validate(core, context=context).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise invalid_body(error, prefix="/attributes") from error
    return fields, free


async def identify(request: web.Request) -> web.Response:
    body = await read_body(request, IdentifyRequest)
    address = normalised_address(request, body.channel, body.address, "/address")
    fields, free = _split_attributes(request, body.attributes)
    async with request.app[SESSIONS].begin() as session:
        result = await request.app[DIRECTORY].identify(
            session, kind=body.channel, address=address, fields=fields, attributes=free
        )
        if result.created or fields or free:
            await audit.record(
                session, request.app[CLOCK], request[CALLER], "identify", str(result.profile.id),
                created=result.created, fields=sorted(fields), attributes=sorted(free),
            )  # fmt: skip
        out = IdentifyResult(created=result.created, profile=profile_out(request, result.profile))
    log.info(
        "profile.identified",
        profile_id=str(out.profile.id),
        channel=body.channel.value,
        address=redact(body.channel, address),
        created=result.created,
    )
    return respond(out, status=201 if result.created else 200)


async def search_profiles(request: web.Request) -> web.Response:
    query = request.query.get("query", "").strip()
    if not query or len(query) > 200:
        raise Problem(
            400, "query parameter 'query' must be 1 to 200 characters: a name, an e-mail "
            "address or a phone number", type_="invalid-query",
        )  # fmt: skip
    limit = query_int(request, "limit", 25, 1, 100)
    assert limit is not None
    after = query_uuid(request, "after")
    async with request.app[SESSIONS]() as session:
        rows = await people_search.search(
            session, query, request.app[SETTINGS].default_phone_region, limit, after
        )
        items = [profile_out(request, p) for p in rows]
    return respond(ProfilePage(items=items, next=items[-1].id if len(items) == limit else None))


async def get_profile(request: web.Request) -> web.Response:
    profile_id = path_uuid(request, "id", _not_found(request))
    async with request.app[SESSIONS]() as session:
        profile = await request.app[DIRECTORY].get(session, profile_id)
        if profile is None:
            raise _not_found(request)
        if profile.merged_into_id is not None:
            # The person lives on in another profile: point there.
            pointer = MergedPointer(merged_into=profile.merged_into_id)
            response = respond(pointer, status=308)
            response.headers["Location"] = f"/api/v1/profiles/{profile.merged_into_id}"
            return response
        return respond(profile_out(request, profile))


async def update_profile(request: web.Request) -> web.Response:
    body = await read_body(request, ProfileUpdate)
    fields, free = _split_attributes(request, body.attributes)
    async with request.app[SESSIONS].begin() as session:
        profile = await live_profile(request, session)
        await request.app[DIRECTORY].update(session, profile, fields, free)
        await audit.record(
            session, request.app[CLOCK], request[CALLER], "update_profile", str(profile.id),
            fields=sorted(fields), attributes=sorted(free),
        )  # fmt: skip
        return respond(profile_out(request, profile))


async def add_identity(request: web.Request) -> web.Response:
    body = await read_body(request, IdentityIn)
    address = normalised_address(request, body.kind, body.address, "/address")
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        profile = await live_profile(request, session)
        survivor, merged_away = await request.app[DIRECTORY].add_identity(
            session, profile, body.kind, address, actor=caller.name
        )
        await audit.record(
            session, request.app[CLOCK], caller, "add_identity", str(survivor.id),
            kind=body.kind.value, merged_away=str(merged_away) if merged_away else None,
        )  # fmt: skip
        out = IdentityAdded(profile=profile_out(request, survivor), merged_away=merged_away)
    if merged_away:
        log.info("profile.merged", survivor=str(survivor.id), merged=str(merged_away))
    return respond(out)


async def merge_profiles(request: web.Request) -> web.Response:
    body = await read_body(request, MergeRequest)
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        profile = await live_profile(request, session)
        other = await request.app[DIRECTORY].resolve(session, body.other)
        if other is None:
            raise Problem(404, f"There is no profile {body.other}.", type_="profile-not-found")
        if other.id == profile.id:
            raise Problem(409, "These are already one profile.", type_="already-merged")
        survivor = await request.app[DIRECTORY].merge(
            session, profile, other, reason=body.reason, actor=caller.name
        )
        merged_away = other.id if survivor.id == profile.id else profile.id
        await audit.record(
            session, request.app[CLOCK], caller, "merge_profiles", str(survivor.id),
            merged_away=str(merged_away),
        )  # fmt: skip
        out = IdentityAdded(profile=profile_out(request, survivor), merged_away=merged_away)
    log.info("profile.merged", survivor=str(survivor.id), merged=str(merged_away))
    return respond(out)


async def export_profile(request: web.Request) -> web.Response:
    """Everything held about the person (503 if Rasa cannot be reached)."""
    profile_id = path_uuid(request, "id", _not_found(request))
    try:
        document = await request.app[PRIVACY].export(profile_id, request[CALLER])
    except RasaAway as away:
        raise _rasa_away(away) from away
    if document is None:
        raise _not_found(request)
    return web.json_response(document)


def _rasa_away(away: RasaAway) -> Problem:
    return Problem(503, str(away), type_="rasa-unavailable", headers={"Retry-After": "5"})


async def erase_profile(request: web.Request) -> web.Response:
    """Erase the person everywhere (503 and nothing erased if Rasa cannot be reached)."""
    profile_id = path_uuid(request, "id", _not_found(request))
    try:
        erased = await request.app[PRIVACY].erase(profile_id, request[CALLER])
    except RasaAway as away:
        raise _rasa_away(away) from away
    if not erased:
        raise _not_found(request)
    return web.Response(status=204)


def _run_out(run: RetentionRun) -> RetentionRunOut:
    return RetentionRunOut(
        id=run.id, started_at=run.started_at, finished_at=run.finished_at,
        status=run.status,
        deleted=run.deleted, error=run.error, started_by=run.started_by,
    )  # fmt: skip


async def get_retention(request: web.Request) -> web.Response:
    policy = request.app[BUSINESS_TEXTS].retention
    async with request.app[SESSIONS]() as session:
        runs = await retention.recent_runs(session)
    return respond(
        RetentionOut(
            conversations_days=policy.conversations_days,
            messages_days=policy.messages_days,
            events_days=policy.events_days,
            runs=[_run_out(r) for r in runs],
        )
    )


async def run_retention(request: web.Request) -> web.Response:
    """Run the retention job now (an admin's request, audited under their token)."""
    run = await request.app[RETENTION].run(request[CALLER])
    assert run is not None  # a manual run has a slot of its own
    return respond(_run_out(run), status=201)
