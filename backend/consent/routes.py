"""Consent routes: a profile's ledger and current state, appending to the ledger, and
the check every sender makes before sending."""

from __future__ import annotations

import uuid

from aiohttp import web
from sqlalchemy import select

from backend.api.bodies import read_body, respond
from backend.api.keys import CALLER, CLOCK, KEYWORD_REPLIES, SESSIONS, SMS_DOOR
from backend.api.problems import Problem
from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, ConsentRefused, Purpose, Source, State
from backend.consent.schemas import (
    ConsentCheck,
    ConsentIn,
    ConsentLineOut,
    ConsentOut,
    ConsentRecorded,
    ConsentStateOut,
)
from backend.core import audit
from backend.core.identities import IdentityKind
from backend.core.logs import get_logger
from backend.core.models import Identity
from backend.messaging.sms_door import MessagePurpose, OutboundText, SendRefused
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
            line = await consent.append(session, profile.id, entry, request.app[CLOCK], caller.name)
        except ConsentRefused as refused:
            status = 422 if refused.kind in ("consent-in-future", "consent-channel-all") else 409
            raise Problem(status, str(refused), type_=refused.kind) from refused
        channel = Channel.SMS if body.channel is Channel.ALL else body.channel
        state = await consent.state(session, profile.id, channel, body.purpose)
        await audit.record(
            session, request.app[CLOCK], caller, "record_consent", str(profile.id),
            seq=line.seq, channel=line.channel, purpose=line.purpose, entry=body.action,
            source=line.source,
        )  # fmt: skip
        out = ConsentRecorded(
            line=ConsentLineOut.model_validate(line, from_attributes=True),
            state=state,
            allowed=consent.allows(state, body.purpose),
        )
    log.info(
        "consent.recorded", profile_id=str(profile.id), channel=line.channel,
        purpose=line.purpose, action=body.action, source=line.source, state=state.value,
    )  # fmt: skip
    if line.pending and state is State.PENDING:
        await _ask_to_confirm(request, profile.id, line.seq)
    return respond(out, status=201)


async def _ask_to_confirm(request: web.Request, profile_id: uuid.UUID, seq: int) -> None:
    """Text the person the double opt-in question; their YES confirms (messaging.inbound)."""
    async with request.app[SESSIONS]() as session:
        number = await session.scalar(
            select(Identity.address)
            .where(Identity.profile_id == profile_id, Identity.kind == IdentityKind.SMS.value)
            .order_by(Identity.created_at.desc())
            .limit(1)
        )
    door = request.app.get(SMS_DOOR)
    if number is None or door is None:
        reason = "no SMS number" if number is None else "sending is not configured"
        log.warning("consent.confirmation_not_asked", profile_id=str(profile_id), reason=reason)
        return
    try:
        await door.send(
            OutboundText(
                to=number,
                body=request.app[KEYWORD_REPLIES].confirm_request,
                purpose=MessagePurpose.TRANSACTIONAL,
                send_key=f"double-opt-in:{seq}",
            )
        )
    except SendRefused as refused:
        log.warning(
            "consent.confirmation_not_sent", profile_id=str(profile_id), reason=refused.kind
        )


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
