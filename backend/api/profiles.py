"""Profile routes: identify a person by a channel identity, read a profile."""

from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import ValidationError

from backend import profiles
from backend.api.bodies import read_body, respond
from backend.api.schemas import (
    CORE_FIELDS,
    IdentifyRequest,
    IdentifyResult,
    ProfileFields,
    ProfileOut,
)
from backend.identities import InvalidAddress, normalise_address, redact
from backend.keys import CLOCK, SESSIONS, SETTINGS
from backend.logs import get_logger
from backend.models import Profile
from backend.problems import Problem, invalid_body

log = get_logger(__name__)


async def identify(request: web.Request) -> web.Response:
    body = await read_body(request, IdentifyRequest)
    settings = request.app[SETTINGS]
    try:
        address = normalise_address(body.channel, body.address, settings.default_phone_region)
    except InvalidAddress as error:
        raise Problem(
            422,
            f"/address: {error}",
            type_="invalid-body",
            title="The request body is not valid",
            errors=[{"pointer": "/address", "detail": str(error)}],
        ) from error
    core = {k: v for k, v in body.attributes.items() if k in CORE_FIELDS}
    free = {k: v for k, v in body.attributes.items() if k not in CORE_FIELDS}
    try:
        fields = ProfileFields.model_validate(
            core, context={"default_phone_region": settings.default_phone_region}
        ).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise invalid_body(error, prefix="/attributes") from error

    async with request.app[SESSIONS].begin() as session:
        result = await profiles.identify(
            session,
            kind=body.channel,
            address=address,
            fields=fields,
            attributes=free,
            clock=request.app[CLOCK],
        )
        out = IdentifyResult(created=result.created, profile=profile_out(result.profile))
    log.info(
        "profile.identified",
        profile_id=str(out.profile.id),
        channel=body.channel.value,
        address=redact(body.channel, address),
        created=result.created,
        fields=sorted(fields),
        attributes=sorted(free),
    )
    return respond(out, status=201 if result.created else 200)


async def get_profile(request: web.Request) -> web.Response:
    not_found = Problem(
        404, f"There is no profile {request.match_info['id']!r}.", type_="profile-not-found"
    )
    try:
        profile_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise not_found from None
    async with request.app[SESSIONS]() as session:
        profile = await profiles.get(session, profile_id)
        if profile is None:
            raise not_found
        return respond(profile_out(profile))


def profile_out(profile: Profile) -> ProfileOut:
    return ProfileOut.model_validate(profile, from_attributes=True)
