"""Hand-off routes: mark a conversation for a person, list them, claim one, answer the
customer on their channel, and hand the conversation back to the bot (which resumes it
in Rasa)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

from aiohttp import BodyPartReader, web

from backend.api.bodies import path_uuid, query_choice, read_body, respond, row_by_id
from backend.api.keys import CALLER, CLOCK, DESK, DIRECTORY, EMAIL_REPLIES, SESSIONS
from backend.api.problems import Problem
from backend.conversations.rasa_client import RasaUnavailable
from backend.core.logs import get_logger
from backend.core.models import Handoff, Message
from backend.handoffs import handoff as handoffs
from backend.handoffs.desk import ReplyRefusal, ReplyRefused
from backend.handoffs.email_replies import EmailReceived
from backend.handoffs.handoff import HandoffConflict
from backend.handoffs.schemas import (
    ClaimIn,
    EmailIn,
    EmailReceivedOut,
    HandoffIn,
    HandoffList,
    HandoffOut,
    ReplyIn,
    ReplySent,
)
from backend.messaging import mailgun
from backend.messaging.door import SendRefused
from backend.messaging.email_inbound import InboundEmail
from backend.messaging.mailgun import NotFromMailgun
from backend.messaging.routes import mailgun_webhook, not_from_mailgun, refusal_problem

log = get_logger(__name__)

NOT_FOUND = "handoff-not-found"


def _out(handoff: Handoff) -> HandoffOut:
    out = HandoffOut.model_validate(handoff, from_attributes=True)
    out.call_back = handoffs.is_call_back(handoff)
    return out


def _refused(error: HandoffConflict | ReplyRefused) -> Problem:
    status = 503 if error.kind == ReplyRefusal.NOT_CONFIGURED else 409
    return Problem(status, str(error), type_=error.kind)


async def _on_desk(request: web.Request, step: Awaitable[Handoff | None]) -> HandoffOut:
    """A desk step's hand-off, or the problem that says why it could not be taken."""
    try:
        handoff = await step
    except (HandoffConflict, ReplyRefused) as refused:
        raise _refused(refused) from refused
    except PermissionError as error:
        raise Problem(403, str(error), type_="forbidden") from error
    except SendRefused as refused:
        raise refusal_problem(refused) from refused
    except RasaUnavailable as error:
        raise Problem(
            503, f"Rasa could not be reached ({error}); nothing changed.",
            type_="rasa-unavailable", headers={"Retry-After": "5"},
        ) from error  # fmt: skip
    if handoff is None:
        raise _missing(request)
    return _out(handoff)


def _missing(request: web.Request) -> Problem:
    return Problem(404, f"There is no hand-off {request.match_info['id']!r}.", type_=NOT_FOUND)


def _id(request: web.Request) -> uuid.UUID:
    return path_uuid(request, "id", _missing(request))


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
    desk = request.app[DESK]
    return respond(
        await _on_desk(request, desk.claim(_id(request), request[CALLER], body.take_over))
    )


async def release_handoff(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    return respond(await _on_desk(request, desk.release(_id(request), request[CALLER])))


async def reply_handoff(request: web.Request) -> web.Response:
    body = await read_body(request, ReplyIn)
    handoff_id = _id(request)
    sent: list[Message] = []

    async def reply() -> Handoff | None:
        message = await request.app[DESK].reply(
            handoff_id, request[CALLER], body.body, body.send_key
        )
        if message is None:
            return None
        sent.append(message)
        async with request.app[SESSIONS]() as session:
            return await session.get(Handoff, handoff_id)

    handoff = await _on_desk(request, reply())
    [message] = sent
    out = ReplySent(
        handoff=handoff, message_id=message.id, channel=message.channel, status=message.status
    )
    return respond(out, status=201)


async def close_handoff(request: web.Request) -> web.Response:
    desk = request.app[DESK]
    return respond(await _on_desk(request, desk.close(_id(request), request[CALLER])))


async def receive_email(request: web.Request) -> web.Response:
    """An e-mail a person sent, from any provider's inbound hook: recorded once, and
    handed to a person (or, subject "unsubscribe", their e-mail marketing withdrawn)."""
    body = await read_body(request, EmailIn)
    mail = InboundEmail(
        sender=body.from_, recipient=body.to, subject=body.subject.strip(),
        text=body.text.strip(), message_id=body.message_id, in_reply_to=body.in_reply_to,
    )  # fmt: skip
    return _email_received(await request.app[EMAIL_REPLIES].receive(mail))


async def mailgun_inbound(request: web.Request) -> web.Response:
    """Mailgun's inbound route (forward(), fully parsed), checked against Mailgun's
    signature; 406 for an e-mail Parley cannot take, which Mailgun does not retry."""
    webhook = mailgun_webhook(request)
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Problem(415, "Mailgun posts a form.", type_="unsupported-media-type")
    fields = await _mailgun_form(request)
    try:
        webhook.check(fields, request.app[CLOCK].now())
    except NotFromMailgun as refused:
        raise not_from_mailgun(refused) from None
    try:
        mail = mailgun.inbound_email(fields)
    except mailgun.Unreadable as error:
        raise Problem(406, f"Parley cannot take this e-mail: {error}.",
                      type_="unreadable-email") from None  # fmt: skip
    return _email_received(await request.app[EMAIL_REPLIES].receive(mail))


# The fields of a forwarded e-mail, all told (its words, headers, the HTML): attachments
# are skipped as they stream by, so an e-mail with large ones still lands.
MAX_EMAIL_FIELDS = 2 * 1024 * 1024


async def _mailgun_form(request: web.Request) -> dict[str, str]:
    """The form's text fields; attachments (multipart parts with a file name) are not
    kept: the person's words are what the agent answers."""
    try:
        if request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            return {k: v for k, v in form.items() if isinstance(v, str)}
        fields: dict[str, str] = {}
        size = 0
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.filename or not part.name:
                await part.release()
                continue
            value = bytearray()
            while chunk := await part.read_chunk():
                size += len(chunk)
                if size > MAX_EMAIL_FIELDS:
                    raise Problem(413, "The e-mail's text is too large.", type_="body-too-large")
                value += chunk
            fields[part.name] = value.decode("utf-8", "replace")
        return fields
    except (ValueError, UnicodeError):
        raise Problem(400, "The form cannot be read.", type_="invalid-body") from None


def _email_received(done: EmailReceived) -> web.Response:
    received = done.received
    return respond(
        EmailReceivedOut(
            message_id=received.message.id, profile_id=received.profile_id,
            outcome="unsubscribed" if received.unsubscribed else "handed_off",
            repeated=received.repeated, handoff_id=done.handoff.id if done.handoff else None,
        ),
        status=200 if received.repeated else 201,
    )  # fmt: skip
