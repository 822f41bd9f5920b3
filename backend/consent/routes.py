"""Consent routes: a profile's ledger and current state, appending to the ledger, and
the check every sender makes before sending."""

from __future__ import annotations

from aiohttp import web

from backend.api.bodies import read_body, respond
from backend.api.keys import CALLER, CLOCK, KEYWORD_REPLIES, SESSIONS, SMS_DOOR
from backend.api.problems import Problem
from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, ConsentRefused, Purpose, Source
from backend.consent.schemas import (
    ConsentCheck,
    ConsentIn,
    ConsentLineOut,
    ConsentOut,
    ConsentRecorded,
    ConsentStateOut,
)
from backend.core.logs import get_logger
from backend.messaging.inbound import ask_to_confirm
from backend.people.routes import live_profile

log = get_logger(__name__)


async def get_consent(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        states = await consent.states(session, profile.id)
        ledger = await consent.ledger(session, profile.id)
        return respond(
            ConsentOut(
                profile_id=profile.id,
                states=[ConsentStateOut.model_validate(s, from_attributes=True) for s in states],
                ledger=[
                    ConsentLineOut.model_validate(line, from_attributes=True) for line in ledger
                ],
            )
        )


async def record_consent(request: web.Request) -> web.Response:
    body = await read_body(request, ConsentIn)
    caller = request[CALLER]
    entry = consent.Entry(
        channel=body.channel,
        purpose=body.purpose,
        action=Action.WITHDRAW if body.action == "withdraw" else Action.GRANT,
        source=Source(body.source),
        wording=body.wording,
        reply=body.reply,
        metadata=body.metadata,
        occurred_at=body.occurred_at,
        confirm=body.action == "confirm",
    )
    async with request.app[SESSIONS].begin() as session:
        profile = await live_profile(request, session)
        try:
            recorded = await consent.record(session, profile.id, entry, request.app[CLOCK], caller)
        except ConsentRefused as refused:
            status = 422 if refused.kind in ("consent-in-future", "consent-channel-all") else 409
            raise Problem(status, str(refused), type_=refused.kind) from refused
        line = recorded.line
        out = ConsentRecorded(
            line=ConsentLineOut.model_validate(line, from_attributes=True),
            state=recorded.state,
            allowed=recorded.allowed,
        )
    log.info(
        "consent.recorded", profile_id=str(profile.id), channel=line.channel,
        purpose=line.purpose, action=body.action, source=line.source,
        state=recorded.state.value,
    )  # fmt: skip
    if recorded.awaits_confirmation:
        await ask_to_confirm(
            request.app[SESSIONS], request.app.get(SMS_DOOR), request.app[KEYWORD_REPLIES],
            profile.id, line.seq,
        )  # fmt: skip
    return respond(out, status=201)


async def check_consent(request: web.Request) -> web.Response:
    try:
        channel = Channel(request.match_info["channel"])
        purpose = Purpose(request.match_info["purpose"])
    except ValueError:
        raise Problem(
            404,
            "Ask about channel sms, voice, email or web and purpose marketing or transactional.",
            type_="unknown-consent-kind",
        ) from None
    if channel is Channel.ALL:
        raise Problem(404, "Ask about one channel at a time.", type_="unknown-consent-kind")
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        state = await consent.state(session, profile.id, channel, purpose)
    return respond(
        ConsentCheck(
            profile_id=profile.id,
            channel=channel,
            purpose=purpose,
            state=state,
            allowed=consent.allows(state, purpose),
        )
    )
