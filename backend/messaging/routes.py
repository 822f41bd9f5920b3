"""Message routes: the one door for outbound texts, web messages and e-mails, texts
people send (handed over by the SMS channel), a profile's messages and calls, and
Twilio's status callbacks (a text's delivery, and the progress of a call Parley
placed)."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.api.bodies import query_choice, query_int, query_uuid, read_body, respond
from backend.api.keys import (
    CALLER,
    CLOCK,
    EMAIL_DOOR,
    INBOX,
    MAILGUN,
    SESSIONS,
    SETTINGS,
    SMS_DOOR,
    WEB_DOOR,
)
from backend.api.problems import Problem
from backend.core import audit
from backend.core.identities import InvalidAddress, normalise_phone
from backend.core.logs import get_logger
from backend.core.models import HeldMessage, Message
from backend.messaging import email_feedback, held, history, mailgun
from backend.messaging.call_door import advance_call_status
from backend.messaging.door import MessagePurpose, NotNow, Refusal, SendRefused
from backend.messaging.email_door import Mailed, OutboundEmail
from backend.messaging.held import Held
from backend.messaging.inbound import InboundText
from backend.messaging.mailgun import MailgunWebhook, NotFromMailgun
from backend.messaging.schemas import (
    EmailEventsIn,
    EmailEventsRecorded,
    HeldOut,
    HeldPage,
    MessageOut,
    MessagePage,
    TextIn,
    TextReceipt,
    TextReceived,
    TextSent,
)
from backend.messaging.sms_door import OutboundText, Sent, SmsDoor, advance_status
from backend.messaging.twilio_routes import TwilioForm, twilio_form
from backend.messaging.web_door import Pushed, WebPush
from backend.people.routes import live_profile

log = get_logger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def message_out(row: Message) -> MessageOut:
    return MessageOut(
        id=row.id,
        profile_id=row.profile_id,
        direction="inbound" if row.direction == "inbound" else "outbound",
        channel=row.channel,
        purpose=row.purpose,
        to_address=row.to_address,
        from_address=row.from_address,
        subject=row.subject,
        body=row.body,
        media_urls=list(row.media.get("urls", [])),
        status=row.status,
        error_code=row.error_code,
        error_message=row.error_message,
        provider_sid=row.provider_sid,
        keyword=row.keyword,
        in_reply_to=row.in_reply_to_id,
        batch_id=row.batch_id,
        part=row.part,
        parts=row.parts,
        turn=row.turn,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _door(request: web.Request) -> SmsDoor:
    door = request.app.get(SMS_DOOR)
    if door is None:
        raise Problem(
            503,
            "Sending texts is not configured: set PARLEY_TWILIO_AUTH_TOKEN "
            "(`parley run` sets one for the local Twilio emulator).",
            type_="sms-not-configured",
        )
    return door


# The HTTP status of each reason a door did not send (its problem type is the reason).
REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.CONSENT_REFUSED: 409,
    Refusal.QUIET_HOURS: 409,
    Refusal.FREQUENCY_CAP: 409,
    Refusal.RECIPIENT_UNSUBSCRIBED: 409,
    Refusal.UNDELIVERABLE_NUMBER: 422,
    Refusal.SENDER_BUSY: 429,
    Refusal.SEND_IN_PROGRESS: 409,
    Refusal.SEND_KEY_REUSED: 409,
    Refusal.NOT_A_KEYWORD_REPLY: 409,
    Refusal.NOT_A_REPLY: 422,
    Refusal.ALREADY_ANSWERED: 409,
    Refusal.NOT_A_CALL_PURPOSE: 422,
    Refusal.NOT_A_WEB_PURPOSE: 422,
    Refusal.NOTHING_TO_SAY: 422,
    Refusal.CALL_TOO_LONG: 422,
    Refusal.TWILIO_UNAVAILABLE: 502,
    Refusal.TWILIO_REFUSED: 502,
    Refusal.CHANNEL_UNAVAILABLE: 502,
    Refusal.NOT_AN_EMAIL_PURPOSE: 422,
    Refusal.UNDELIVERABLE_ADDRESS: 422,
    Refusal.MAIL_UNAVAILABLE: 502,
    Refusal.EMAIL_NOT_CONFIGURED: 503,
}


async def send_text(request: web.Request) -> web.Response:
    body = await read_body(request, TextIn)
    try:
        sent: Sent | Pushed | Mailed | Held
        if body.channel == "email":
            sent = await _email(request, body)
        else:
            sent = await (_push(request, body) if body.channel == "web" else _text(request, body))
    except SendRefused as refused:
        raise refusal_problem(refused) from refused
    if isinstance(sent, Held):
        return respond(
            TextSent(messages=[], held=held_out(sent.message)),
            status=200 if sent.repeated else 202,
        )
    return respond(
        TextSent(messages=[message_out(r) for r in sent.messages]),
        status=200 if sent.repeated else 201,
    )


async def _text(request: web.Request, body: TextIn) -> Sent | Held:
    return await _door(request).send(
        OutboundText(
            to=body.to,
            body=body.body,
            purpose=MessagePurpose(body.purpose),
            media_urls=body.media_urls,
            in_reply_to=body.in_reply_to,
            send_key=body.send_key,
            if_not_now=NotNow(body.if_not_now),
            requested_by=request[CALLER].name,
        )
    )


async def _email(request: web.Request, body: TextIn) -> Mailed | Held:
    assert body.subject is not None  # TextIn checks an e-mail has one
    return await request.app[EMAIL_DOOR].send(
        OutboundEmail(
            to=body.to, subject=body.subject, text=body.body, html=body.html,
            purpose=MessagePurpose(body.purpose), send_key=body.send_key,
            if_not_now=NotNow(body.if_not_now), requested_by=request[CALLER].name,
        )
    )  # fmt: skip


async def _push(request: web.Request, body: TextIn) -> Pushed | Held:
    door = request.app.get(WEB_DOOR)
    if door is None:
        raise Problem(
            503,
            "Web messages go through Rasa, whose token is not set: set PARLEY_RASA_TOKEN "
            "(`parley run` sets one).",
            type_="web-not-configured",
        )
    return await door.push(
        WebPush(
            to=body.to, body=body.body, purpose=MessagePurpose(body.purpose),
            send_key=body.send_key, if_not_now=NotNow(body.if_not_now),
            requested_by=request[CALLER].name,
        )
    )  # fmt: skip


def refusal_problem(refused: SendRefused) -> Problem:
    """A door's refusal as the problem the API answers (its kind is the type)."""
    headers = (
        {"Retry-After": str(max(1, round(refused.retry_after)))}
        if refused.retry_after is not None
        else None
    )
    extensions = {"not_before": refused.not_before.isoformat()} if refused.not_before else None
    return Problem(
        REFUSAL_STATUS[refused.kind], str(refused), type_=refused.kind, headers=headers,
        extensions=extensions,
    )  # fmt: skip


def held_out(row: HeldMessage) -> HeldOut:
    return HeldOut(
        id=row.id, profile_id=row.profile_id, channel=row.channel, to_address=row.to_address,
        purpose=row.purpose, body=row.body, media_urls=list(row.media.get("urls", [])),
        send_key=row.send_key, reason=row.reason,
        not_before=row.not_before, status=row.status,
        detail=row.detail, message_id=row.message_id, attempts=row.attempts,
        created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
    )  # fmt: skip


async def list_held(request: web.Request) -> web.Response:
    """Held messages, oldest first: all, one status's, or one person's."""
    limit = query_int(request, "limit", 50, 1, 500) or 50
    after = query_int(request, "after", None, 1, 2**62)
    status = query_choice(request, "status", ("", "held", "sent", "refused", "cancelled"))
    profile_id = query_uuid(request, "profile_id")
    query = select(HeldMessage)
    if status:
        query = query.where(HeldMessage.status == status)
    if profile_id:
        query = query.where(HeldMessage.profile_id == profile_id)
    if after is not None:
        query = query.where(HeldMessage.id > after)
    async with request.app[SESSIONS]() as session:
        rows = list(await session.scalars(query.order_by(HeldMessage.id).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return respond(
        HeldPage(items=[held_out(r) for r in page], next=page[-1].id if more and page else None)
    )


async def _held_row(request: web.Request, session: AsyncSession) -> HeldMessage:
    """The held message the path's `{id}` names, else 404."""
    raw = request.match_info["id"]
    row = None
    if raw.isdigit() and 0 < int(raw) < 2**62:
        row = await session.get(HeldMessage, int(raw))
    if row is None:
        raise Problem(404, f"There is no held message {raw!r}.", type_="held-not-found")
    return row


async def get_held(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        return respond(held_out(await _held_row(request, session)))


async def cancel_held(request: web.Request) -> web.Response:
    """Cancel a message still held; 409 if it has gone (or was cancelled) already."""
    caller = request[CALLER]
    async with request.app[SESSIONS].begin() as session:
        row = await _held_row(request, session)
        if not await held.cancel(session, row, request.app[CLOCK].now(), caller.name):
            raise Problem(
                409, f"Held message {row.id} is {row.status} already.", type_="held-not-held"
            )
        await audit.record(session, request.app[CLOCK], caller, "cancel_held", str(row.id))
        out = held_out(row)
    return respond(out)


async def get_message(request: web.Request) -> web.Response:
    missing = Problem(
        404, f"There is no message {request.match_info['id']!r}.", type_="message-not-found"
    )
    try:
        message_id = int(request.match_info["id"])
    except ValueError:
        raise missing from None
    async with request.app[SESSIONS]() as session:
        row = await session.get(Message, message_id) if 0 < message_id < 2**62 else None
        if row is None:
            raise missing
        return respond(message_out(row))


async def profile_messages(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 500) or 50
    before = query_int(request, "before", None, 1, 2**62)
    async with request.app[SESSIONS]() as session:
        profile = await live_profile(request, session)
        page, more = await history.of_person(session, profile.id, limit, before)
    return respond(
        MessagePage(
            items=[message_out(r) for r in page], next=page[-1].id if more and page else None
        )
    )


async def receive_text(request: web.Request) -> web.Response:
    """A text as the SMS channel hands it over: recorded (its keyword applied) before
    the channel tells Twilio it arrived; the bot answers it later (backend.messaging.text_turns)."""
    body = await read_body(request, TextReceived)
    received = await request.app[INBOX].receive(
        InboundText(
            sid=body.sid,
            from_=body.from_,
            to=body.to,
            body=body.body,
            media_urls=body.media_urls,
            opt_out_type=body.opt_out_type,
        )
    )
    return respond(
        TextReceipt(
            message_id=received.message_id,
            profile_id=received.profile_id,
            duplicate=received.duplicate,
            keyword=received.keyword.value if received.keyword else None,
            handled=received.handled,
        ),
        status=200 if received.duplicate else 201,
    )


async def twilio_sms(request: web.Request) -> web.Response:
    """Twilio's "A message comes in" URL: a text a person sent, signed. It is recorded
    (its keyword applied) before Twilio gets its 200; the bot answers it after
    (backend.messaging.text_turns), so Twilio never waits for the bot. A text that cannot be
    recorded is not acknowledged, and Twilio tries its "Primary handler fails" URL."""
    form = await twilio_form(request, request.app[SETTINGS].sms_webhook_url)
    region = request.app[SETTINGS].default_phone_region
    try:
        text = inbound_text(form, region)
    except InvalidAddress as error:
        raise Problem(
            400, f"Not a text Parley can record: {error}", type_="invalid-form"
        ) from error
    received = await request.app[INBOX].receive(text)
    if error_code := form.get("ErrorCode"):  # Twilio fell back to this URL
        log.info("sms.received_by_fallback", message_id=received.message_id,
                 error_code=error_code)  # fmt: skip
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


def inbound_text(form: TwilioForm, region: str) -> InboundText:
    """The text in a form Twilio posted for "A message comes in"."""
    sid, sender, to = form.get("MessageSid", ""), form.get("From", ""), form.get("To", "")
    if not sid or len(sid) > 64:
        raise InvalidAddress("MessageSid is missing")
    try:
        count = min(int(form.get("NumMedia") or 0), 10)
    except ValueError:
        count = 0
    media = [url for i in range(count) if (url := form.get(f"MediaUrl{i}", ""))]
    return InboundText(
        sid=sid,
        from_=normalise_phone(sender, region),
        to=normalise_phone(to, region),
        # Some carriers turn @ into ¡ on the way (GSM-7's 0x00 and 0x40).
        body=form.get("Body", "").replace("¡", "@")[:1600],
        media_urls=media,
        opt_out_type=form.get("OptOutType") or None,
    )


async def twilio_status(request: web.Request) -> web.Response:
    """Twilio reports a message's progress; only requests Twilio signed count."""
    form = await twilio_form(request, request.app[SETTINGS].status_callback_url)
    sid, status = str(form.get("MessageSid", "")), str(form.get("MessageStatus", ""))
    code = _int(form.get("ErrorCode"))
    async with request.app[SESSIONS].begin() as session:
        row = await _reported_message(session, request.query.get("message"), sid)
        if row is None:
            log.warning("twilio.status_unknown_message")
            return web.Response(status=204)
        if row.provider_sid is None and sid:
            row.provider_sid = sid
        changed = advance_status(
            row, status, code, f"Twilio error {code}" if code else None, request.app[CLOCK]
        )
    if changed:
        log.info("sms.status", message_id=row.id, status=status, error_code=code)
    return web.Response(status=204)


async def twilio_call_status(request: web.Request) -> web.Response:
    """Twilio reports the progress of a call Parley placed (messaging.call_door); only
    requests Twilio signed count, and a status never moves back."""
    form = await twilio_form(request, request.app[SETTINGS].call_status_callback_url)
    sid, status = str(form.get("CallSid", "")), str(form.get("CallStatus", ""))
    code = _int(form.get("ErrorCode"))
    async with request.app[SESSIONS].begin() as session:
        row = await _reported_message(session, request.query.get("message"), sid)
        if row is None or row.channel != "voice" or row.direction != "outbound":
            log.warning("twilio.call_status_unknown_call")
            return web.Response(status=204)
        if row.provider_sid is None and sid:
            row.provider_sid = sid
        changed = advance_call_status(row, status, code, request.app[CLOCK])
    if changed:
        log.info("call.status", message_id=row.id, call_status=status, status=row.status)
    return web.Response(status=204)


async def _reported_message(
    session: AsyncSession, message_id: str | None, sid: str
) -> Message | None:
    row = None
    if message_id and message_id.isdigit() and int(message_id) < 2**62:
        row = await session.get(Message, int(message_id))
        if row is not None and row.provider_sid not in (None, sid):
            row = None  # the URL names one message, Twilio another: believe neither
    if row is None and sid:
        row = await session.scalar(select(Message).where(Message.provider_sid == sid))
    return row


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


async def record_email_events(request: web.Request) -> web.Response:
    """A mail provider's bounces and complaints, in the generic form."""
    body = await read_body(request, EmailEventsIn)
    outcomes = []
    async with request.app[SESSIONS].begin() as session:
        for event in body.events:
            found = email_feedback.Feedback(
                email_feedback.Kind(event.type), event.address, "api",
                permanent=event.permanent, message_id=event.message_id,
                detail={"reason": event.reason} if event.reason else {},
            )  # fmt: skip
            outcomes.append((await email_feedback.record(session, found, request.app[CLOCK])).value)
    return respond(EmailEventsRecorded(outcomes=outcomes))


def mailgun_webhook(request: web.Request) -> MailgunWebhook:
    """Mailgun's signature checker, or 404 where its signing key is not set."""
    webhook = request.app.get(MAILGUN)
    if webhook is None:
        raise Problem(
            404, "Mailgun's webhook is not configured here: set "
            "PARLEY_MAILGUN_WEBHOOK_SIGNING_KEY.", type_="mailgun-not-configured",
        )  # fmt: skip
    return webhook


def not_from_mailgun(refused: NotFromMailgun) -> Problem:
    """The 401 for a request whose Mailgun signature does not hold (logged: someone may
    be forging them)."""
    log.warning("mailgun.refused", reason=str(refused))
    return Problem(401, f"Not from Mailgun: {refused}.", type_="invalid-signature")


async def mailgun_events(request: web.Request) -> web.Response:
    """Mailgun's webhook: a bounce or a complaint, checked against Mailgun's signature."""
    webhook = mailgun_webhook(request)
    try:
        body = await request.json()
    except ValueError:
        raise Problem(400, "The body is not JSON.", type_="invalid-body") from None
    try:
        event = webhook.verify(body, request.app[CLOCK].now())
    except NotFromMailgun as refused:
        raise not_from_mailgun(refused) from None
    found = mailgun.feedback(event)
    if found is None:
        return respond(EmailEventsRecorded(outcomes=["ignored"]))
    async with request.app[SESSIONS].begin() as session:
        outcome = await email_feedback.record(session, found, request.app[CLOCK])
    log.info("mailgun.event", kind=found.kind.value, outcome=outcome.value)
    return respond(EmailEventsRecorded(outcomes=[outcome.value]))
