"""The e-mail door, over real SMTP on loopback to the local mail sink (aiosmtpd):
what a marketing e-mail carries (RFC 8058 and CAN-SPAM), consent at the moment of
sending, unsubscribing by link and by one-click POST, the send key, a refused address,
a mail server that is down, quiet hours, and DKIM signatures that verify."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import dkim
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from backend.api.app import create_app
from backend.api.keys import EMAIL_DOOR, HELD, SESSIONS
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.models import Message
from backend.core.settings import Settings
from backend.devtools.mail_sink import MailSink, Received
from backend.messaging.door import MessagePurpose, NotNow, SendRefused
from backend.messaging.email_door import Mailed, OutboundEmail
from backend.messaging.email_message import Dkim
from tests.backend.conftest import Api, IssueToken
from tests.servers import free_port

PUBLIC = "https://parley.example"
ADA = "ada@example.com"


@dataclass
class Mail:
    api: Api
    admin: Api
    client: TestClient
    sink: MailSink
    port: int
    clock: FixedClock
    app: Any

    async def person(self, address: str = ADA, consent: bool = True) -> str:
        """Someone in London (no quiet hours at the test's time), with e-mail marketing
        consent granted and confirmed (the confirmation e-mail's link followed), or
        not; the sink is emptied after."""
        person = await self.api.identify("email", address, timezone="Europe/London")
        if consent:
            await self.grant(str(person["id"]))
            done = await self.client.post(confirmation_url(self.sink.received[-1]),
                                          data={"confirm": "1"})  # fmt: skip
            assert done.status == 200, await done.text()
            self.sink.received.clear()
        return str(person["id"])

    async def grant(self, person: str) -> dict[str, Any]:
        return await self.api.post(
            f"/api/v1/profiles/{person}/consent",
            {"channel": "email", "purpose": "marketing", "action": "grant",
             "source": "api", "wording": "Send me news by e-mail"},
            expect=201,
        )  # fmt: skip

    async def send(self, expect: int = 201, **fields: Any) -> dict[str, Any]:
        body = {"channel": "email", "to": ADA, "subject": "Spring news",
                "body": "Hello Ada,\n\nOur spring release is out.", "purpose": "marketing",
                **fields}  # fmt: skip
        return await self.api.post("/api/v1/messages", body, expect=expect)

    async def consent(self, person: str) -> str:
        found = await self.api.get(f"/api/v1/profiles/{person}/consent")
        states = {(s["channel"], s["purpose"]): s["state"] for s in found["states"]}
        return str(states.get(("email", "marketing"), "none"))


@pytest.fixture
async def mail(
    settings: Settings, clock: FixedClock, aiohttp_client: Any, issue_token: IssueToken
) -> AsyncIterator[Mail]:
    sink = MailSink()
    server = await asyncio.get_running_loop().create_server(sink.smtp, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    configured = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none",
                "public_url": PUBLIC, "smtp_timeout_seconds": 5.0}
    )  # fmt: skip
    app = create_app(configured, clock)
    client = await aiohttp_client(app)
    yield Mail(
        Api(client, await issue_token(Role.SERVICE)), Api(client, await issue_token(Role.ADMIN)),
        client, sink, port, clock, app,
    )  # fmt: skip
    server.close()


def only(sink: MailSink) -> Received:
    [received] = sink.received
    return received


def confirmation_url(received: Received) -> str:
    found = re.search(re.escape(PUBLIC) + r"(/email/confirm/\S+)", received.part("plain") or "")
    assert found, received.part("plain")
    return found.group(1)


def unsubscribe_url(received: Received) -> str:
    header = str(received.message["List-Unsubscribe"])
    [https] = [part.strip("<> ") for part in header.split(",") if "https://" in part]
    return https.removeprefix(PUBLIC)


async def test_a_marketing_email_carries_what_the_law_and_mailboxes_ask(mail: Mail) -> None:
    await mail.person()
    sent = await mail.send()
    [record] = sent["messages"]
    assert (record["channel"], record["status"], record["subject"]) == (
        "email",
        "sent",
        "Spring news",
    )

    received = only(mail.sink)
    message = received.message
    assert received.rcpt_tos == [ADA]
    assert received.mail_from == "hello@brightdesk.example"
    assert str(message["From"]) == "Brightdesk <hello@brightdesk.example>"
    assert (str(message["To"]), str(message["Subject"])) == (ADA, "Spring news")
    assert message["Date"] and message["Message-ID"] == record["provider_sid"]
    assert message.get_content_type() == "multipart/alternative"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    header = str(message["List-Unsubscribe"])
    assert f"<{PUBLIC}/email/unsubscribe/" in header
    assert "<mailto:hello@brightdesk.example?subject=unsubscribe>" in header
    text, page = received.part("plain") or "", received.part("html") or ""
    assert "Our spring release is out." in text
    postal = "548 Market St, Suite 300, San Francisco, CA 94104, United States"
    for part in (text, page):
        assert postal in part and "agreed to hear from Brightdesk by e-mail" in part
    assert f"Unsubscribe: {PUBLIC}/email/unsubscribe/" in text
    assert f'<a href="{PUBLIC}/email/unsubscribe/' in page and "<p>Hello Ada,</p>" in page


async def test_marketing_waits_until_the_address_owner_confirms(mail: Mail) -> None:
    """Double opt-in: a grant is pending until the link in the confirmation e-mail is
    followed; opening the page confirms nothing, its button does, once."""
    person = (await mail.api.identify("email", ADA, timezone="Europe/London"))["id"]
    granted = await mail.grant(person)
    assert granted["state"] == "pending"
    asked = only(mail.sink)
    assert str(asked.message["Subject"]) == "Please confirm: e-mails from Brightdesk"
    assert asked.message["List-Unsubscribe"] is None  # transactional: it asks, it sells nothing
    link = confirmation_url(asked)
    assert "Yes, send me e-mails" in (asked.part("html") or "")
    refused = await mail.send(expect=409)
    assert refused["type"] == "urn:parley:problem:consent-refused"

    page = await mail.client.get(link)
    assert page.status == 200 and "Yes, send me e-mails</button>" in await page.text()
    assert await mail.consent(person) == "pending"
    done = await mail.client.post(link, data={"confirm": "1"})
    assert done.status == 200 and "You are subscribed" in await done.text()
    assert await mail.consent(person) == "granted"
    ledger = (await mail.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]
    assert (ledger[-1]["source"], ledger[-1]["channel_metadata"]["address"]) == (
        "email_link", ADA,
    )  # fmt: skip
    again = await mail.client.post(link, data={"confirm": "1"})
    assert again.status == 200
    assert len((await mail.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]) == len(ledger)
    await mail.send()
    assert len(mail.sink.received) == 2


async def test_a_confirmation_link_expires_and_one_for_a_withdrawn_grant_confirms_nothing(
    mail: Mail,
) -> None:
    person = (await mail.api.identify("email", ADA))["id"]
    await mail.grant(person)
    link = confirmation_url(only(mail.sink))
    mail.clock.advance(timedelta(days=8))
    expired = await mail.client.post(link, data={"confirm": "1"})
    assert expired.status == 404 and "expired" in await expired.text()
    assert (await mail.client.get(link[:-4])).status == 404

    mail.sink.received.clear()
    await mail.grant(person)
    link = confirmation_url(only(mail.sink))
    await mail.api.post(
        f"/api/v1/profiles/{person}/consent",
        {"channel": "email", "purpose": "marketing", "action": "withdraw", "source": "api"},
        expect=201,
    )
    gone = await mail.client.post(link, data={"confirm": "1"})
    assert gone.status == 409 and "Nothing to confirm" in await gone.text()
    assert await mail.consent(person) == "withdrawn"


async def test_consent_is_checked_at_the_moment_of_sending(mail: Mail) -> None:
    await mail.person(consent=False)
    refused = await mail.send(expect=409)
    assert refused["type"] == "urn:parley:problem:consent-refused"
    assert mail.sink.received == []
    # A receipt needs no marketing consent, only no withdrawal.
    await mail.send(purpose="transactional", subject="Your receipt", body="Paid: $19.")
    assert only(mail.sink).message["List-Unsubscribe"] is None
    assert "Unsubscribe" not in (only(mail.sink).part("plain") or "")


async def test_the_unsubscribe_link_and_the_one_click_post_each_withdraw_consent(
    mail: Mail,
) -> None:
    person = await mail.person()
    [sent] = (await mail.send())["messages"]
    link = unsubscribe_url(only(mail.sink))

    # Opening the link (as a mail scanner would) changes nothing; the button does.
    page = await mail.client.get(link)
    assert page.status == 200 and "Unsubscribe</button>" in await page.text()
    assert await mail.consent(person) == "granted"
    done = await mail.client.post(link, data={"confirm": "1"})
    assert done.status == 200 and "You are unsubscribed" in await done.text()
    assert await mail.consent(person) == "withdrawn"
    ledger = (await mail.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]
    assert ledger[-1]["source"] == "unsubscribe"
    assert ledger[-1]["channel_metadata"]["method"] == "link"
    assert ledger[-1]["channel_metadata"]["message_id"] == sent["id"]
    refused = await mail.send(expect=409)
    assert refused["type"] == "urn:parley:problem:consent-refused"
    assert len(mail.sink.received) == 1

    # Agreeing again, then the mail app's own Unsubscribe button (RFC 8058), the next
    # day (the frequency cap allows one marketing message a day).
    mail.clock.advance(timedelta(days=1))
    await mail.person()
    await mail.send(send_key="second")
    one_click = unsubscribe_url(mail.sink.received[-1])
    answer = await mail.client.post(
        one_click, data="List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert answer.status == 200
    assert await mail.consent(person) == "withdrawn"
    ledger = (await mail.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]
    assert ledger[-1]["channel_metadata"]["method"] == "one-click"
    # Again: nothing more is recorded.
    assert (await mail.client.post(one_click, data="List-Unsubscribe=One-Click")).status == 200
    again = (await mail.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]
    assert len(again) == len(ledger)


async def test_a_forged_or_cut_short_link_unsubscribes_nobody(mail: Mail) -> None:
    person = await mail.person()
    await mail.send()
    link = unsubscribe_url(only(mail.sink))
    for bad in (link[:-3], link[:-3] + "abc", "/email/unsubscribe/not-a-token"):
        assert (await mail.client.get(bad)).status == 404
        assert (await mail.client.post(bad, data="List-Unsubscribe=One-Click")).status == 404
    assert await mail.consent(person) == "granted"


async def test_words_beyond_ascii_arrive_as_written(mail: Mail) -> None:
    await mail.person()
    await mail.send(subject="Café news ☕ for Zoë", body="Grüße aus Köln,\n\nnaïve façade: 5 €.")
    received = only(mail.sink)
    assert str(received.message["Subject"]) == "Café news ☕ for Zoë"
    assert "Grüße aus Köln" in (received.part("plain") or "")
    assert "naïve façade: 5 €." in (received.part("html") or "")
    assert b"Caf\xc3\xa9" not in received.raw.split(b"\r\n\r\n", 1)[0]  # headers encoded


async def test_the_same_send_key_sends_once(mail: Mail) -> None:
    await mail.person()
    first = await mail.send(send_key="spring-ada")
    again = await mail.send(send_key="spring-ada", expect=200)
    assert again["messages"][0]["id"] == first["messages"][0]["id"]
    assert len(mail.sink.received) == 1


async def test_many_emails_at_once_are_each_answered_in_their_place(mail: Mail) -> None:
    """The scheduler's way: a batch checked and recorded together, handed over side by
    side, each with its own answer."""
    await mail.person()  # Ada: marketing confirmed
    await mail.person("grace@example.com", consent=False)  # Grace: no marketing consent
    await mail.send(send_key="earlier", purpose="transactional")  # a key used before
    mail.sink.received.clear()
    door = mail.app[EMAIL_DOOR]

    def email(to: str, key: str, purpose: MessagePurpose = MessagePurpose.MARKETING) -> Any:
        return OutboundEmail(to=to, subject=f"For {key}", text="Hello.", purpose=purpose,
                             send_key=key, if_not_now=NotNow.REFUSE)  # fmt: skip

    answers = await door.send_many([
        email(ADA, "a"), email("grace@example.com", "g"),
        email("grace@example.com", "g2", MessagePurpose.TRANSACTIONAL),
        email("bounce-me@example.com", "b", MessagePurpose.TRANSACTIONAL),
        email(ADA, "earlier", MessagePurpose.TRANSACTIONAL),
        email(ADA, "a2"),  # Ada's second marketing e-mail today: the frequency cap
    ])  # fmt: skip
    kinds = [a.kind.value if isinstance(a, SendRefused) else type(a).__name__ for a in answers]
    assert kinds == [
        "Mailed", "consent-refused", "Mailed", "undeliverable-address", "Mailed",
        "frequency-cap",
    ]  # fmt: skip
    assert isinstance(answers[4], Mailed) and answers[4].repeated
    subjects = sorted(str(r.message["Subject"]) for r in mail.sink.received)
    assert subjects == ["For a", "For g2"]
    [ada] = [r for r in mail.sink.received if r.rcpt_tos == [ADA]]
    assert ada.message["List-Unsubscribe"] is not None
    again = await door.send_many([email(ADA, "a")])
    assert isinstance(again[0], Mailed) and again[0].repeated and len(mail.sink.received) == 2


async def test_an_address_the_server_refuses_is_recorded_as_failed(mail: Mail) -> None:
    refused = await mail.send(
        to="bounce@example.com", purpose="transactional", send_key="r1", expect=422
    )
    assert refused["type"] == "urn:parley:problem:undeliverable-address"
    assert "550" in refused["detail"]
    assert mail.sink.received == []
    again = await mail.send(
        to="bounce@example.com", purpose="transactional", send_key="r1", expect=200
    )
    assert again["messages"][0]["status"] == "failed"


async def test_when_the_mail_server_is_down_nothing_is_lost_and_the_same_key_retries(
    mail: Mail,
) -> None:
    await mail.person()
    # The door pointed at a port where nothing listens, then back at the sink.
    sink_port = mail.port
    mail.app[EMAIL_DOOR].mailer = replace(mail.app[EMAIL_DOOR].mailer, port=free_port())
    down = await mail.send(send_key="k", expect=502)
    assert down["type"] == "urn:parley:problem:mail-unavailable"
    mail.app[EMAIL_DOOR].mailer = replace(mail.app[EMAIL_DOOR].mailer, port=sink_port)
    await mail.send(send_key="k", expect=201)
    assert len(mail.sink.received) == 1
    async with mail.app[SESSIONS]() as session:
        attempts = (
            await session.execute(
                select(Message.status, Message.error_message).where(
                    Message.subject == "Spring news"
                )
            )
        ).all()
    assert sorted(status for status, _ in attempts) == ["failed", "sent"]
    assert any("Connect" in (error or "") for _, error in attempts)  # why the first failed


async def test_marketing_waits_for_the_persons_morning(mail: Mail) -> None:
    person = await mail.api.identify("email", ADA, timezone="Asia/Tokyo")  # 03:30 there
    await mail.grant(person["id"])  # the confirmation is transactional: it goes at night
    assert (await mail.client.post(confirmation_url(only(mail.sink)), data={"confirm": "1"})).ok
    mail.sink.received.clear()
    held = await mail.send(expect=202)
    assert held["held"]["reason"] == "quiet-hours" and mail.sink.received == []
    mail.clock.advance(timedelta(hours=5))
    assert await mail.app[HELD].release_due() == 1
    received = only(mail.sink)
    assert str(received.message["Subject"]) == "Spring news"
    assert received.message["List-Unsubscribe"] is not None


async def test_a_dkim_signature_verifies_against_the_published_key(
    mail: Mail, tmp_path: Any
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )  # fmt: skip
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mail.app[EMAIL_DOOR].dkim = Dkim("brightdesk.example", "parley", pem)
    await mail.person()
    await mail.send()
    raw = only(mail.sink).raw
    assert raw.startswith(b"DKIM-Signature:")

    def txt(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"parley._domainkey.brightdesk.example."
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    assert dkim.verify(raw, dnsfunc=txt)
    assert not dkim.verify(raw.replace(b"Spring news", b"Spring NEWS"), dnsfunc=txt)


@pytest.mark.parametrize(
    ("fields", "pointer"),
    [
        ({"to": "not an address"}, "/to"),
        ({"subject": "Hi\r\nBcc: everyone@example.com"}, "/"),
        ({"subject": None}, "/"),
        ({"purpose": "compliance"}, "/"),
        ({"media_urls": ["https://example.com/a.png"]}, "/"),
    ],
)
async def test_an_email_that_cannot_be_one_is_refused_before_anything_is_sent(
    mail: Mail, fields: dict[str, Any], pointer: str
) -> None:
    await mail.person()
    refused = await mail.send(expect=422, **fields)
    assert refused["type"] == "urn:parley:problem:invalid-body"
    assert any(e["pointer"] == pointer for e in refused["errors"]), refused
    assert mail.sink.received == []
