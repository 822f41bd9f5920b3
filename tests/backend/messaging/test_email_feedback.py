"""Bounces and complaints (backend/messaging/email_feedback.py): from the SMTP server at
once, from the generic events API, and from Mailgun's signed webhook as the local mail
sink plays it. A hard bounce suppresses the address, a soft one is only noted, a
complaint withdraws e-mail marketing consent; a request not signed by the key, stale or
replayed, changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from backend.api.app import create_app
from backend.api.keys import SESSIONS
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.models import EmailSuppression, Message
from backend.core.settings import Settings
from backend.devtools.mail_sink import MailSink
from tests.backend.conftest import Api, IssueToken

KEY = "mailgun-test-signing-key"
ADA = "ada@example.com"


@dataclass
class Feedback:
    api: Api
    client: TestClient
    sink: MailSink
    sink_http: TestClient
    app: Any

    async def subscriber(self, address: str = ADA) -> str:
        person = (await self.api.identify("email", address, timezone="Europe/London"))["id"]
        for action in ("grant", "confirm"):
            await self.api.post(
                f"/api/v1/profiles/{person}/consent",
                {"channel": "email", "purpose": "marketing", "action": action, "source": "api"},
                expect=201,
            )
        self.sink.received.clear()
        return str(person)

    async def send(self, expect: int = 201, **fields: Any) -> dict[str, Any]:
        body = {"channel": "email", "to": ADA, "subject": "News", "body": "Hello.",
                "purpose": "marketing", **fields}  # fmt: skip
        return await self.api.post("/api/v1/messages", body, expect=expect)

    async def state(self, person: str) -> str:
        found = await self.api.get(f"/api/v1/profiles/{person}/consent/email/marketing")
        return str(found["state"])


@pytest.fixture
async def feedback(
    settings: Settings, clock: FixedClock, aiohttp_client: Any, aiohttp_server: Any,
    issue_token: IssueToken,
) -> AsyncIterator[Feedback]:  # fmt: skip
    sink = MailSink()
    smtp = await asyncio.get_running_loop().create_server(sink.smtp, "127.0.0.1", 0)
    configured = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": smtp.sockets[0].getsockname()[1],
                "smtp_security": "none", "mailgun_webhook_signing_key": SecretStr(KEY)}
    )  # fmt: skip
    app = create_app(configured, clock)
    client = await aiohttp_client(app)
    sink.mailgun = (str(client.make_url("/webhooks/mailgun")), KEY)
    sink.clock = lambda: clock.now().timestamp()  # the backend's time, to check freshness
    sink_http = await aiohttp_client(await aiohttp_server(sink.app()))
    yield Feedback(Api(client, await issue_token(Role.SERVICE)), client, sink, sink_http, app)
    smtp.close()


async def suppressions(feedback: Feedback) -> list[str]:
    async with feedback.app[SESSIONS]() as session:
        return list(await session.scalars(select(EmailSuppression.address)))


async def test_no_such_mailbox_at_once_suppresses_the_address(feedback: Feedback) -> None:
    refused = await feedback.send(to="bounce-7@example.com", purpose="transactional", expect=422)
    assert "550" in refused["detail"]
    assert await suppressions(feedback) == ["bounce-7@example.com"]
    again = await feedback.send(to="bounce-7@example.com", purpose="transactional", expect=422)
    assert "suppressed" in again["detail"]


async def test_the_providers_reports_through_the_generic_api(feedback: Feedback) -> None:
    person = await feedback.subscriber()
    [sent] = (await feedback.send())["messages"]
    soft = {"type": "bounce", "address": ADA, "permanent": False,
            "message_id": sent["provider_sid"].strip("<>"), "reason": "mailbox full"}  # fmt: skip
    noted = await feedback.api.post("/api/v1/email/events", {"events": [soft]})
    assert noted["outcomes"] == ["noted"]
    async with feedback.app[SESSIONS]() as session:
        message = await session.get(Message, sent["id"])
        assert message is not None
        assert (message.status, message.error_message) == ("sent", "bounced: mailbox full")
    assert await suppressions(feedback) == []

    complaint = {"type": "complaint", "address": ADA, "message_id": sent["provider_sid"]}
    withdrawn = await feedback.api.post("/api/v1/email/events", {"events": [complaint] * 2})
    assert withdrawn["outcomes"] == ["withdrawn", "already"]
    assert await feedback.state(person) == "withdrawn"
    ledger = (await feedback.api.get(f"/api/v1/profiles/{person}/consent"))["ledger"]
    assert ledger[-1]["source"] == "email_complaint"

    hard = {"type": "bounce", "address": ADA, "reason": "no such user"}
    assert (await feedback.api.post("/api/v1/email/events", {"events": [hard]}))["outcomes"] == [
        "suppressed"
    ]
    refused = await feedback.send(purpose="transactional", subject="Receipt", expect=422)
    assert refused["type"] == "urn:parley:problem:undeliverable-address"
    bad = await feedback.api.post(
        "/api/v1/email/events", {"events": [{"type": "bounce", "address": "nobody"}]}, expect=422
    )
    assert bad["errors"][0]["pointer"] == "/events/0/address"


async def test_mailgun_reports_a_bounce_and_a_complaint_as_the_sink_plays_them(
    feedback: Feedback,
) -> None:
    person = await feedback.subscriber()
    await feedback.send()
    [received] = feedback.sink.received
    for to, found in ((ADA.upper(), 1), ("someone@example.com", 0)):  # the sink's ?to=
        listed = await (await feedback.sink_http.get("/sink/emails", params={"to": to})).json()
        assert len(listed["emails"]) == found, to
    complained = await feedback.sink_http.post(f"/sink/emails/{received.id}/complaint")
    assert complained.status == 200, await complained.text()
    assert (await complained.json())["outcomes"] == ["withdrawn"]
    assert await feedback.state(person) == "withdrawn"
    soft = await feedback.sink_http.post(
        f"/sink/emails/{received.id}/bounce", json={"permanent": False}
    )
    assert (await soft.json())["outcomes"] == ["noted"]
    hard = await feedback.sink_http.post(f"/sink/emails/{received.id}/bounce")
    assert (await hard.json())["outcomes"] == ["suppressed"]
    assert await suppressions(feedback) == [ADA]


def signed(timestamp: str, token: str, key: str = KEY) -> dict[str, Any]:
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": {"event": "failed", "severity": "permanent", "recipient": ADA},
    }


async def test_a_mailgun_request_not_signed_fresh_and_new_changes_nothing(
    feedback: Feedback, clock: FixedClock
) -> None:
    now = str(int(clock.now().timestamp()))
    cases = {
        "another key": signed(now, "t" * 50, key="someone-elses-key"),
        "stale": signed(str(int(clock.now().timestamp()) - 3600), "u" * 50),
        "no signature": {"event-data": {"event": "failed", "recipient": ADA}},
    }
    for name, body in cases.items():
        answer = await feedback.client.post("/webhooks/mailgun", json=body)
        assert answer.status == 401, name
        assert (await answer.json())["type"] == "urn:parley:problem:invalid-signature"
    good = signed(now, "v" * 50)
    assert (await feedback.client.post("/webhooks/mailgun", json=good)).status == 200
    replayed = await feedback.client.post("/webhooks/mailgun", json=good)
    assert replayed.status == 401
    assert await suppressions(feedback) == [ADA]  # the one genuine request
