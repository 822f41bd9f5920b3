"""Consent routes: a profile's ledger and current state, appending to the ledger, the
check every sender makes before sending, and unsubscribing from marketing e-mail."""

from __future__ import annotations

import html

from aiohttp import web

from backend.api.bodies import read_body, respond
from backend.api.keys import CALLER, CLOCK, EMAIL_DOOR, KEYWORD_REPLIES, SESSIONS, SMS_DOOR
from backend.api.problems import Problem
from backend.consent import email_confirmation, unsubscribe
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
    if recorded.awaits_confirmation and line.channel == Channel.EMAIL:
        await request.app[EMAIL_DOOR].ask_to_confirm(profile.id, line.seq)
    elif recorded.awaits_confirmation:
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


# Unsubscribing from marketing e-mail (backend.consent.unsubscribe): pages for a
# person's browser, and RFC 8058's one-click POST from their mail app. The token in the
# path is the only credential.
def _page(title: str, body: str, status: int = 200) -> web.Response:
    return web.Response(
        status=status, content_type="text/html", charset="utf-8",
        text=(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title></head>"
            '<body style="font-family:sans-serif;max-width:36em;margin:3em auto;padding:0 1em">'
            f"<h1>{html.escape(title)}</h1>{body}</body></html>"
        ),
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                 "form-action 'self'; frame-ancestors 'none'"},
    )  # fmt: skip


def _ticket(request: web.Request) -> unsubscribe.Ticket | None:
    door = request.app[EMAIL_DOOR]
    return unsubscribe.read(door.unsubscribe_key, request.match_info["token"])


NOT_VALID = (
    "This unsubscribe link is not one of ours, or it was cut short. Open it again from "
    "the e-mail, or reply to the e-mail asking to unsubscribe."
)


async def unsubscribe_page(request: web.Request) -> web.Response:
    """The page an e-mail's unsubscribe link opens: one button, nothing to sign in to.
    (Opening it changes nothing: mail scanners open links too.)"""
    ticket = _ticket(request)
    if ticket is None:
        return _page("Link not valid", f"<p>{NOT_VALID}</p>", status=404)
    name = html.escape(request.app[EMAIL_DOOR].sender.name)
    return _page(
        "Unsubscribe",
        f"<p>Stop marketing e-mails from {name} to "
        f"<b>{html.escape(ticket.address)}</b>?</p>"
        '<form method="post"><button type="submit" name="confirm" value="1" '
        'style="font-size:1.1em;padding:.5em 1.2em">Unsubscribe</button></form>'
        "<p>E-mails you asked for, such as receipts and booking confirmations, still come.</p>",
    )


async def unsubscribe_now(request: web.Request) -> web.Response:
    """The page's button, or a mail app's one-click POST (RFC 8058): unsubscribed at
    once, recorded with how."""
    ticket = _ticket(request)
    if ticket is None:
        return _page("Link not valid", f"<p>{NOT_VALID}</p>", status=404)
    try:
        form = await request.post() if request.can_read_body else {}
    except ValueError:  # a body that is not the form it says: the button was pressed
        form = {}
    method = (
        unsubscribe.Method.ONE_CLICK
        if form.get("List-Unsubscribe") == "One-Click"
        else unsubscribe.Method.LINK
    )
    async with request.app[SESSIONS].begin() as session:
        done = await unsubscribe.unsubscribe(session, ticket, method, request.app[CLOCK])
    name = html.escape(request.app[EMAIL_DOOR].sender.name)
    if done is not None:
        log.info("email.unsubscribed", method=method.value, already=done.already)
    return _page(
        "You are unsubscribed",
        f"<p>{name} will send no more marketing e-mails to "
        f"<b>{html.escape(ticket.address)}</b>.</p>",
    )


# Double opt-in by e-mail (backend.consent.email_confirmation): the confirmation
# e-mail's link opens a page; its button confirms.


def _request(request: web.Request) -> email_confirmation.Request | str:
    """The grant the link confirms, or why the page cannot confirm it."""
    door = request.app[EMAIL_DOOR]
    try:
        found = email_confirmation.read(
            door.confirmation_key, request.match_info["token"], request.app[CLOCK].now()
        )
    except email_confirmation.Expired:
        return (
            "This confirmation link has expired. Ask us again (in the chat, or wherever "
            "you signed up) and we will send a new one."
        )
    return found if found is not None else NOT_VALID_CONFIRMATION


NOT_VALID_CONFIRMATION = (
    "This confirmation link is not one of ours, or it was cut short. Open it again from the e-mail."
)


async def confirmation_page(request: web.Request) -> web.Response:
    """The page the confirmation e-mail's link opens: one button. (Opening it confirms
    nothing: mail scanners open links too.)"""
    found = _request(request)
    if isinstance(found, str):
        return _page("Link not valid", f"<p>{found}</p>", status=404)
    name = html.escape(request.app[EMAIL_DOOR].sender.name)
    return _page(
        "Confirm your e-mail address",
        f"<p>Get product news and offers from {name} at "
        f"<b>{html.escape(found.address)}</b>?</p>"
        '<form method="post"><button type="submit" name="confirm" value="1" '
        'style="font-size:1.1em;padding:.5em 1.2em">Yes, send me e-mails</button></form>'
        "<p>Every e-mail has a link to unsubscribe.</p>",
    )


async def confirm_now(request: web.Request) -> web.Response:
    found = _request(request)
    if isinstance(found, str):
        return _page("Link not valid", f"<p>{found}</p>", status=404)
    async with request.app[SESSIONS].begin() as session:
        outcome = await email_confirmation.confirm(session, found, request.app[CLOCK])
    log.info("email.confirmation", outcome=outcome.value)
    name = html.escape(request.app[EMAIL_DOOR].sender.name)
    if outcome is email_confirmation.Outcome.GONE:
        return _page(
            "Nothing to confirm",
            "<p>This request was withdrawn or replaced by a newer one, so nothing has "
            "changed. If you want our e-mails, ask us again and follow the newest link.</p>",
            status=409,
        )
    return _page(
        "You are subscribed",
        f"<p>Thank you: {name} will send product news and offers to "
        f"<b>{html.escape(found.address)}</b>. Every e-mail has a link to unsubscribe.</p>",
    )
