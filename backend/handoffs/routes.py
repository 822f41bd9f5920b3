"""Hand-off routes: mark a conversation for a person, list them, claim one, answer the
customer on their channel, and hand the conversation back to the bot (which resumes it
in Rasa)."""

from __future__ import annotations

from aiohttp import web

from backend.api.bodies import path_uuid, query_choice, read_body, respond, row_by_id
from backend.api.keys import AGENT_REPLIES, CALLER, CLOCK, DIRECTORY, RASA, SESSIONS
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.conversations.rasa_client import RasaUnavailable
from backend.core import audit
from backend.core.logs import get_logger
from backend.core.models import Handoff
from backend.handoffs import handoff as handoffs
from backend.handoffs.replies import ReplyRefusal, ReplyRefused
from backend.handoffs.schemas import ClaimIn, HandoffIn, HandoffList, HandoffOut, ReplyIn, ReplySent
from backend.messaging.door import SendRefused
from backend.messaging.routes import refusal_problem

log = get_logger(__name__)

NOT_FOUND = "handoff-not-found"


def _out(handoff: Handoff) -> HandoffOut:
    out = HandoffOut.model_validate(handoff, from_attributes=True)
    out.call_back = handoffs.is_call_back(handoff)
    return out


def _conflict(error: handoffs.HandoffConflict | ReplyRefused) -> Problem:
    if isinstance(error, ReplyRefused):
        status = 503 if error.kind is ReplyRefusal.NOT_CONFIGURED else 409
        return Problem(status, str(error), type_=error.kind)
    closed = "closed" in str(error)
    kind = ReplyRefusal.CLOSED if closed else ReplyRefusal.CLAIMED
    return Problem(409, str(error), type_=kind)


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


async def get_handoff(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        handoff = await row_by_id(request, session, Handoff, "hand-off", NOT_FOUND)
        return respond(_out(handoff))


async def claim_handoff(request: web.Request) -> web.Response:
    body = await read_body(request, ClaimIn)
    caller = request[CALLER]
    if body.take_over and caller.role != Role.ADMIN:
        raise Problem(403, "Only an admin may take a hand-off over.", type_="forbidden")
    async with request.app[SESSIONS].begin() as session:
        handoff = await row_by_id(request, session, Handoff, "hand-off", NOT_FOUND)
        before = handoff.claimed_by
        try:
            claimed = handoffs.claim(handoff, request.app[CLOCK], caller, take_over=body.take_over)
        except handoffs.HandoffConflict as conflict:
            raise _conflict(conflict) from conflict
        if claimed:
            await audit.record(
                session, request.app[CLOCK], caller, "claim_handoff", _target(handoff),
                handoff_id=str(handoff.id), taken_from=before,
            )  # fmt: skip
        return respond(_out(handoff))


async def release_handoff(request: web.Request) -> web.Response:
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        handoff = await row_by_id(request, session, Handoff, "hand-off", NOT_FOUND)
        if handoff.claimed_by is not None:
            try:
                handoffs.release(handoff, caller, take_over=caller.role == Role.ADMIN)
            except handoffs.HandoffConflict as conflict:
                raise _conflict(conflict) from conflict
            await audit.record(
                session, request.app[CLOCK], caller, "release_handoff", _target(handoff),
                handoff_id=str(handoff.id),
            )  # fmt: skip
        return respond(_out(handoff))


async def reply_handoff(request: web.Request) -> web.Response:
    body = await read_body(request, ReplyIn)
    missing = Problem(404, f"There is no hand-off {request.match_info['id']!r}.", type_=NOT_FOUND)
    handoff_id = path_uuid(request, "id", missing)
    try:
        message = await request.app[AGENT_REPLIES].reply(
            handoff_id, request[CALLER], body.body, body.send_key
        )
    except ReplyRefused as refused:
        raise _conflict(refused) from refused
    except SendRefused as refused:
        raise refusal_problem(refused) from refused
    except RasaUnavailable as error:
        raise Problem(
            503, f"The reply could not be put in the conversation: {error}. Nothing was sent.",
            type_="rasa-unavailable", headers={"Retry-After": "5"},
        ) from error  # fmt: skip
    if message is None:
        raise missing
    async with request.app[SESSIONS]() as session:
        handoff = await session.get(Handoff, handoff_id)
        assert handoff is not None
        out = ReplySent(
            handoff=_out(handoff), message_id=message.id, channel=message.channel,
            status=message.status,
        )  # fmt: skip
    return respond(out, status=201)


async def close_handoff(request: web.Request) -> web.Response:
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        handoff = await row_by_id(request, session, Handoff, "hand-off", NOT_FOUND)
        if handoff.status == "open":
            if handoffs.held_by_other(handoff, caller) and caller.role != Role.ADMIN:
                raise Problem(
                    409, f"{handoff.claimed_by} is answering this conversation.",
                    type_=ReplyRefusal.CLAIMED,
                )  # fmt: skip
            # Resume first: if Rasa cannot be reached, the hand-off stays open and says so.
            # (A call-back task too: the customer's next call meets the bot again.)
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
                session, request.app[CLOCK], caller, "close_handoff", _target(handoff),
                handoff_id=str(handoff.id),
            )  # fmt: skip
        out = _out(handoff)
    log.info("handoff.closed", handoff_id=str(out.id))
    return respond(out)


def _target(handoff: Handoff) -> str | None:
    return str(handoff.profile_id) if handoff.profile_id else None
