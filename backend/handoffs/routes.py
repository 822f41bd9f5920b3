"""Hand-off routes: mark a conversation for a person, list them, and hand a conversation
back to the bot (which resumes it in Rasa)."""

from __future__ import annotations

from aiohttp import web

from backend.api.bodies import query_choice, read_body, respond, row_by_id
from backend.api.keys import CALLER, CLOCK, DIRECTORY, RASA, SESSIONS
from backend.api.problems import Problem
from backend.conversations.rasa_client import RasaUnavailable
from backend.core import audit
from backend.core.logs import get_logger
from backend.core.models import Handoff
from backend.handoffs import handoff as handoffs
from backend.handoffs.schemas import HandoffIn, HandoffList, HandoffOut

log = get_logger(__name__)


def _out(handoff: Handoff) -> HandoffOut:
    return HandoffOut.model_validate(handoff, from_attributes=True)


async def open_handoff(request: web.Request) -> web.Response:
    body = await read_body(request, HandoffIn)
    async with request.app[SESSIONS].begin() as session:
        profile_id = None
        if body.profile_id is not None:
            profile = await request.app[DIRECTORY].resolve(session, body.profile_id)
            if profile is None:
                raise Problem(
                    404, f"There is no profile {body.profile_id}.", type_="profile-not-found"
                )
            profile_id = profile.id
        handoff, created = await handoffs.open_handoff(
            session, request.app[CLOCK], request[CALLER], body.conversation_id, body.channel,
            body.reason, profile_id,
        )  # fmt: skip
        out = _out(handoff)
    if created:
        log.info("handoff.opened", handoff_id=str(out.id), reason=out.reason, channel=out.channel)
    return respond(out, status=201 if created else 200)


async def list_handoffs(request: web.Request) -> web.Response:
    status = request.query.get("status") and query_choice(request, "status", ["open", "closed"])
    async with request.app[SESSIONS]() as session:
        rows = await handoffs.listed(session, status or None)
        return respond(HandoffList(items=[_out(h) for h in rows]))


async def close_handoff(request: web.Request) -> web.Response:
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        handoff = await row_by_id(request, session, Handoff, "hand-off", "handoff-not-found")
        if handoff.status == "open":
            # Resume first: if Rasa cannot be reached, the hand-off stays open and says so.
            try:
                await request.app[RASA].resume(handoff.conversation_id)
            except RasaUnavailable as error:
                raise Problem(
                    503,
                    f"The bot could not be resumed: {error}. The hand-off is still open.",
                    type_="rasa-unavailable",
                ) from error
            handoffs.close(handoff, request.app[CLOCK], caller.name)
            await audit.record(
                session, request.app[CLOCK], caller, "close_handoff",
                str(handoff.profile_id) if handoff.profile_id else None,
            )  # fmt: skip
        out = _out(handoff)
    log.info("handoff.closed", handoff_id=str(out.id))
    return respond(out)
