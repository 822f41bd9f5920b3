"""A local mail sink: an SMTP server (aiosmtpd) that keeps every e-mail it is given, and
a small HTTP API and page to read them, for tests and for trying Parley without a mail
provider. `parley run` starts it when no SMTP server is configured, as it starts the
local Twilio.

- SMTP on `mail_sink_smtp_port`: accepts any sender and recipient, as a provider's
  submission endpoint does, except the magic recipients below. With `auth` set it
  requires that user name and password (AUTH PLAIN or LOGIN), as providers do.
- `GET /sink/emails` lists what was received, oldest first (each with its envelope,
  headers, text and HTML parts; `?to=` those to one address); `GET /sink/emails/{id}`
  one with its raw source; `DELETE /sink/emails` forgets them all; `GET /sink` is a page
  listing them.
- `POST /sink/emails/{id}/bounce` (`{"permanent": false}` for a soft bounce) and
  `POST /sink/emails/{id}/complaint` play the provider reporting what became of an
  e-mail: a signed Mailgun webhook to `mailgun`'s URL (`parley run` points it at the
  backend's /webhooks/mailgun with a signing key of its own), answered with the
  backend's answer.
- `POST /sink/emails/{id}/reply` (`{"text": "…"}`, `"subject"` optional) plays the
  person answering the e-mail: their reply, as Mailgun's inbound route forwards it
  (signed, to the webhook URL + `/inbound`), threaded to the e-mail by In-Reply-To.

Magic recipients, as Twilio's magic numbers: a local part starting `bounce` is refused
at RCPT with 550 5.1.1 (a hard bounce: no such mailbox), one starting `busy` with 451
4.3.0 (try again later)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import hmac
import html
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiohttp
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


@dataclass
class Received:
    id: int
    received_at: datetime
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes

    def part(self, subtype: str) -> str | None:
        body = self.message.get_body(preferencelist=(subtype,))
        return body.get_content() if body is not None else None

    def summary(self, raw: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "subject": self.message["Subject"],
            "from": self.message["From"],
            "to": self.message["To"],
            "message_id": self.message["Message-ID"],
            "headers": [[name, str(value)] for name, value in self.message.items()],
            "text": self.part("plain"),
            "html": self.part("html"),
        }
        if raw:
            shown["raw"] = self.raw.decode("utf-8", "replace")
        return shown


@dataclass
class MailSink:
    # (user, password) the SMTP server requires; None: no authentication.
    auth: tuple[str, str] | None = None
    # Where simulated bounces and complaints go, as Mailgun sends them: (webhook URL,
    # signing key). None: not simulated.
    mailgun: tuple[str, str] | None = None
    # Seconds since the epoch, for the events' timestamps (tests set the backend's).
    clock: Callable[[], float] = time.time
    received: list[Received] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # aiosmtpd's handler hooks
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        local = address.rsplit("@", 1)[0].lower()
        if local.startswith("bounce"):
            return "550 5.1.1 The email account that you tried to reach does not exist"
        if local.startswith("busy"):
            return "451 4.3.0 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(envelope.content, bytes):
            raw = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(
            Received(
                id=next(self._ids), received_at=datetime.now(UTC),
                mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos),
                message=message, raw=raw,
            )
        )  # fmt: skip
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        given = (data.login.decode(), data.password.decode())
        return AuthResult(success=given == self.auth)

    def smtp(self) -> SMTP:
        """One SMTP session's protocol (asyncio.Server makes one per connection)."""
        return SMTP(
            self, data_size_limit=MAX_MESSAGE_BYTES, enable_SMTPUTF8=True,
            hostname="mail-sink.local", ident="Parley mail sink",
            authenticator=self._authenticate if self.auth else None,
            auth_required=self.auth is not None,
            # Loopback only, and no TLS here: real providers get TLS (docs/email.md).
            auth_require_tls=False,
        )  # fmt: skip

    # the HTTP side
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sink", self.page)
        app.router.add_get("/sink/emails", self.list_emails)
        app.router.add_delete("/sink/emails", self.forget)
        app.router.add_get("/sink/emails/{id}", self.one)
        app.router.add_post("/sink/emails/{id}/bounce", self.bounce)
        app.router.add_post("/sink/emails/{id}/complaint", self.complaint)
        app.router.add_post("/sink/emails/{id}/reply", self.reply)
        return app

    async def list_emails(self, request: web.Request) -> web.Response:
        """Every e-mail received, oldest first; `?to=` only those to one address."""
        to = request.query.get("to", "").strip().lower()
        shown = [r for r in self.received if not to or to in (a.lower() for a in r.rcpt_tos)]
        return web.json_response({"emails": [r.summary() for r in shown]})

    async def one(self, request: web.Request) -> web.Response:
        return web.json_response(self._found(request).summary(raw=True))

    def _found(self, request: web.Request) -> Received:
        wanted = request.match_info["id"]
        for found in self.received:
            if str(found.id) == wanted:
                return found
        raise web.HTTPNotFound(text=f"no e-mail {wanted}")

    async def bounce(self, request: web.Request) -> web.Response:
        """The e-mail bounced: `{"permanent": false}` for a soft bounce (a full mailbox),
        else a hard one (no such mailbox), reported to Parley as Mailgun reports it."""
        body = await request.json() if request.can_read_body else {}
        permanent = not (isinstance(body, dict) and body.get("permanent") is False)
        status = (
            {"code": 550, "description": "5.1.1 No such mailbox (simulated)"}
            if permanent
            else {"code": 452, "description": "4.2.2 Mailbox full (simulated)"}
        )
        return await self._report(
            self._found(request), "failed",
            {"severity": "permanent" if permanent else "temporary", "delivery-status": status,
             "reason": "bounce" if permanent else "generic"},
        )  # fmt: skip

    async def complaint(self, request: web.Request) -> web.Response:
        """The person marked the e-mail as spam, reported as Mailgun reports it."""
        return await self._report(self._found(request), "complained", {})

    async def reply(self, request: web.Request) -> web.Response:
        """The person answers the e-mail, as Mailgun's inbound route forwards a reply."""
        received = self._found(request)
        body = await request.json() if request.can_read_body else {}
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise web.HTTPBadRequest(text='give the reply\'s words: {"text": "…"}')
        url, key = self._mailgun()
        subject = body.get("subject") or f"Re: {received.message['Subject'] or ''}"
        ours = str(received.message["Message-ID"] or "")
        message_id = f"<reply.{secrets.token_hex(8)}@{received.rcpt_tos[0].rsplit('@', 1)[-1]}>"
        headers = [["From", received.rcpt_tos[0]], ["To", received.mail_from],
                   ["Subject", subject], ["Message-Id", message_id], ["In-Reply-To", ours],
                   ["References", ours]]  # fmt: skip
        quoted = "\n".join("> " + line for line in (received.part("plain") or "").splitlines())
        form = {
            **self._signature(key), "recipient": received.mail_from,
            "sender": received.rcpt_tos[0], "from": received.rcpt_tos[0], "subject": subject,
            "body-plain": f"{text}\n\nOn an earlier day, you wrote:\n{quoted}",
            "stripped-text": text, "message-headers": json.dumps(headers),
        }  # fmt: skip
        async with (
            aiohttp.ClientSession() as client,
            client.post(url + "/inbound", data=form) as answer,
        ):
            return web.Response(
                status=answer.status, text=await answer.text(), content_type="application/json"
            )

    def _mailgun(self) -> tuple[str, str]:
        if self.mailgun is None:
            raise web.HTTPConflict(text="no webhook to report to (PARLEY_MAILGUN_WEBHOOK_URL)")
        return self.mailgun

    def _signature(self, key: str) -> dict[str, str]:
        timestamp, token = str(int(self.clock())), secrets.token_hex(25)
        signed = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        return {"timestamp": timestamp, "token": token, "signature": signed}

    async def _report(self, received: Received, kind: str, more: dict[str, Any]) -> web.Response:
        url, key = self._mailgun()
        now = self.clock()
        event = {
            "event": kind, "id": secrets.token_urlsafe(16), "timestamp": now,
            "recipient": received.rcpt_tos[0],
            "message": {"headers": {"message-id": str(received.message["Message-ID"] or "")
                                    .strip("<>")}},
            **more,
        }  # fmt: skip
        body = {"signature": self._signature(key), "event-data": event}
        async with aiohttp.ClientSession() as client, client.post(url, json=body) as answer:
            return web.Response(
                status=answer.status, text=await answer.text(), content_type="application/json"
            )

    async def forget(self, request: web.Request) -> web.Response:
        self.received.clear()
        return web.Response(status=204)

    async def page(self, request: web.Request) -> web.Response:
        rows = "".join(
            f"<details><summary>#{r.id} {html.escape(r.received_at.strftime('%H:%M:%S'))} "
            f"to {html.escape(', '.join(r.rcpt_tos))}: <b>{html.escape(r.message['Subject'] or '')}"
            f"</b></summary><pre>{html.escape(r.part('plain') or '')}</pre>"
            + (
                f'<iframe sandbox srcdoc="{html.escape(r.part("html") or "")}" '
                'style="width:100%;height:24em;border:1px solid #ccc"></iframe>'
                if r.part("html")
                else ""
            )
            + f'<p><a href="/sink/emails/{r.id}">source and headers</a></p></details>'
            for r in reversed(self.received)
        )
        body = (
            "<!doctype html><meta charset=utf-8><title>Parley mail sink</title>"
            "<h1>E-mails received</h1>"
            + (rows or "<p>None yet. Everything Parley sends by e-mail lands here.</p>")
        )
        return web.Response(text=body, content_type="text/html")
