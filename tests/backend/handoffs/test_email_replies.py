"""People answering e-mails: a reply to a follow-up, forwarded as Mailgun's inbound route
posts it (signed), lands once in the person's conversation and in a hand-off, ends the
sequence at its next step, and the agent's answer goes back by e-mail in the same
thread. An e-mail to the List-Unsubscribe mailto withdraws e-mail marketing. Over real
SMTP to the local mail sink, whose "reply" plays the person (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from backend.api.keys import SESSIONS, WORKER
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.models import Enrolment
from backend.core.settings import PROJECT_ROOT
from backend.devtools.mail_sink import MailSink, Received
from tests.backend.conftest import (
    Api,
    IssueToken,
    StartTexting,
    TextingBackend,
    ask_for_email_marketing,
    follow_confirmation_link,
)
from tests.backend.rasa_trackers import RASA_TOKEN, RasaTrackers

PUBLIC = "https://parley.example"
MAILGUN_KEY = "key-test-mailgun-signing"
ADA = "ada@example.com"

NEWSLETTER = """
trigger: {event: newsletter_joined}
steps:
  - id: hello
    send:
      channel: email
      subject: "Hello from {{ business.name }}"
      template: "<p>Hi {{ profile.first_name or 'there' }}, tell us what you need.</p>"
  - id: later
    wait: 2d
  - id: tips
    send:
      channel: email
      subject: Three tips
      template: "<p>Three tips for your first week.</p>"
"""


@dataclass
class Mailroom:
    backend: TextingBackend
    sink: MailSink
    sink_client: TestClient
    rasa: RasaTrackers
    agent: Api
    clock: FixedClock

    async def subscriber(self) -> str:
        """Ada, e-mail marketing confirmed, enrolled in the newsletter: its first e-mail
        went out; the sink is left holding it alone."""
        api = self.backend.api
        person = str(
            (await api.identify("email", ADA, first_name="Ada", timezone="Europe/London"))["id"]
        )
        await ask_for_email_marketing(api, person)
        [asked] = self.sink.received
        await follow_confirmation_link(self.backend.client, asked, PUBLIC)
        self.sink.received.clear()
        await api.post("/api/v1/events", {"type": "newsletter_joined", "profile_id": person,
                                          "properties": {}})  # fmt: skip
        await self.run_due()
        assert len(self.sink.received) == 1
        return person

    async def run_due(self) -> None:
        while await self.backend.app[WORKER].tick():
            pass

    async def reply(self, received: Received, text: str, **more: Any) -> dict[str, Any]:
        """The person answers `received` from their mail app (the sink forwards it as
        Mailgun's inbound route does)."""
        answer = await self.sink_client.post(
            f"/sink/emails/{received.id}/reply", json={"text": text, **more}
        )
        body: dict[str, Any] = await answer.json()
        body["_status"] = answer.status
        return body

    def signed(self, **fields: str) -> dict[str, str]:
        timestamp, token = str(int(self.clock.now().timestamp())), "t" * 50
        signature = hmac.new(
            MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256
        ).hexdigest()
        return {"timestamp": timestamp, "token": token, "signature": signature, **fields}

    async def mailgun(self, data: Any) -> tuple[int, dict[str, Any]]:
        answer = await self.backend.client.post("/webhooks/mailgun/inbound", data=data)
        return answer.status, await answer.json()


@pytest.fixture
async def room(
    start_texting: StartTexting,
    clock: FixedClock,
    tmp_path: Path,
    issue_token: IssueToken,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> AsyncIterator[Mailroom]:
    data = tmp_path / "data"
    (data / "sequences").mkdir(parents=True)
    for name in ("business.yml", "scoring.yml"):
        shutil.copy(PROJECT_ROOT / "data" / name, data)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", data / "segments")
    (data / "sequences" / "newsletter.yml").write_text(NEWSLETTER)
    rasa = RasaTrackers()
    rasa_server = await aiohttp_server(rasa.app())
    sink = MailSink(clock=lambda: clock.now().timestamp())
    smtp = await asyncio.get_running_loop().create_server(sink.smtp, "127.0.0.1", 0)
    backend = await start_texting(
        data_dir=data, scheduler_enabled=False, smtp_host="127.0.0.1",
        smtp_port=smtp.sockets[0].getsockname()[1], smtp_security="none", public_url=PUBLIC,
        smtp_timeout_seconds=5.0, email_domain_per_second=1000.0,
        rasa_api_url=str(rasa_server.make_url("")).rstrip("/"), rasa_token=SecretStr(RASA_TOKEN),
        mailgun_webhook_signing_key=SecretStr(MAILGUN_KEY),
    )  # fmt: skip
    sink.mailgun = (f"{backend.url}/webhooks/mailgun", MAILGUN_KEY)
    sink_client = await aiohttp_client(TestServer(sink.app()))
    agent = Api(backend.client, await issue_token(Role.AGENT))
    yield Mailroom(backend, sink, sink_client, rasa, agent, clock)
    smtp.close()


async def test_a_reply_lands_in_a_hand_off_ends_the_sequence_and_the_agent_answers_by_email(
    room: Mailroom,
) -> None:
    person = await room.subscriber()
    [hello] = room.sink.received
    answered = await room.reply(hello, "Can you set up our shared inbox with us?")
    assert (answered["_status"], answered["outcome"]) == (201, "handed_off")

    # In the person's history, threaded to our e-mail, and in their conversation (the
    # bot paused there).
    history = await room.backend.api.get(f"/api/v1/profiles/{person}/messages")
    inbound = [m for m in history["items"] if m["direction"] == "inbound"]
    assert [(m["channel"], m["body"]) for m in inbound] == [
        ("email", "Can you set up our shared inbox with us?")
    ]
    said = [e for e in room.rasa.events[ADA] if e["event"] in ("user", "pause")]
    assert [e.get("text") for e in said] == ["Can you set up our shared inbox with us?", None]

    # The sequence ends at its next step: no tips.
    room.clock.advance(timedelta(days=3))
    await room.run_due()
    assert len(room.sink.received) == 1
    async with room.backend.app[SESSIONS]() as session:
        [enrolment] = await session.scalars(select(Enrolment))
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "replied")

    # An agent answers by e-mail, in the same thread.
    [handoff] = (await room.agent.get("/api/v1/handoffs?status=open"))["items"]
    assert (handoff["conversation_id"], handoff["channel"]) == (ADA, "email")
    sent = await room.agent.post(
        f"/api/v1/handoffs/{handoff['id']}/messages",
        {"body": "Of course! How about Thursday at 10?"}, expect=201,
    )  # fmt: skip
    assert sent["channel"] == "email"
    hello_again, answer = room.sink.received
    assert hello_again is hello and answer.rcpt_tos == [ADA]
    assert str(answer.message["Subject"]) == "Re: Hello from Brightdesk"
    assert str(answer.message["In-Reply-To"]).startswith("<reply.")
    assert str(answer.message["References"]) == str(answer.message["In-Reply-To"])
    assert "Of course! How about Thursday at 10?" in (answer.part("plain") or "")
    assert "List-Unsubscribe" not in answer.message  # an answer, not marketing
    message = await room.agent.get(f"/api/v1/messages/{sent['message_id']}")
    assert message["purpose"] == "conversational"
    agent_said = [e for e in room.rasa.events[ADA] if e["event"] == "bot"]
    assert agent_said[-1]["text"] == "Of course! How about Thursday at 10?"


async def test_a_forwarded_email_delivered_twice_is_recorded_once(room: Mailroom) -> None:
    await room.subscriber()
    headers = json.dumps([["Message-Id", "<abc.123@mail.example.com>"], ["Subject", "Hi"]])
    form = {"from": "Ada Lovelace <ada@Example.COM>", "recipient": "hello@brightdesk.example",
            "subject": "Hi", "body-plain": "Hello there\n\n> quoted", "stripped-text":
            "Hello there", "message-headers": headers}  # fmt: skip
    status, first = await room.mailgun(room.signed(**form))
    assert (status, first["outcome"], first["repeated"]) == (201, "handed_off", False)
    # Mailgun retries with a new signature (its own retry, not a replay).
    again = {**room.signed(**form), "token": "u" * 50}
    again["signature"] = hmac.new(
        MAILGUN_KEY.encode(), (again["timestamp"] + again["token"]).encode(), hashlib.sha256
    ).hexdigest()
    status, second = await room.mailgun(again)
    assert (status, second["message_id"], second["repeated"]) == (200, first["message_id"], True)
    handoffs = await room.agent.get("/api/v1/handoffs?status=open")
    assert len(handoffs["items"]) == 1
    assert [e["text"] for e in room.rasa.events[ADA] if e["event"] == "user"] == ["Hello there"]


async def test_forged_replayed_and_unreadable_forwards_are_refused(room: Mailroom) -> None:
    form = {"from": "mallory@example.com", "subject": "Hi", "body-plain": "Hi"}
    forged = {**room.signed(**form), "signature": "0" * 64}
    status, problem = await room.mailgun(forged)
    assert (status, problem["type"]) == (401, "urn:parley:problem:invalid-signature")
    status, _ = await room.mailgun(room.signed(**form))
    assert status == 201
    status, problem = await room.mailgun(room.signed(**form))  # the same token again
    assert status == 401 and "replay" in problem["detail"]
    unreadable = {**form, "from": "not an address", "sender": ""}
    signed = room.signed(**unreadable)
    signed["token"] = "w" * 50
    signed["signature"] = hmac.new(
        MAILGUN_KEY.encode(), (signed["timestamp"] + signed["token"]).encode(), hashlib.sha256
    ).hexdigest()
    status, problem = await room.mailgun(signed)
    assert (status, problem["type"]) == (406, "urn:parley:problem:unreadable-email")
    assert (await room.agent.get("/api/v1/handoffs?status=open"))["items"][0][
        "conversation_id"
    ] == "mallory@example.com"
    assert len((await room.agent.get("/api/v1/handoffs?status=open"))["items"]) == 1


async def test_an_email_with_a_large_attachment_still_lands(room: Mailroom) -> None:
    form = aiohttp.FormData()
    for name, value in room.signed(
        **{"from": "ada@example.com", "subject": "Our logo", "stripped-text": "Logo attached."}
    ).items():
        form.add_field(name, value)
    form.add_field("attachment-1", b"\x89PNG" + b"\0" * 3_000_000, filename="logo.png",
                   content_type="image/png")  # fmt: skip
    status, body = await room.mailgun(form)
    assert (status, body["outcome"]) == (201, "handed_off")


async def test_an_email_to_the_unsubscribe_mailto_withdraws_email_marketing(
    room: Mailroom,
) -> None:
    person = await room.subscriber()
    received = await room.backend.api.post(
        "/api/v1/email/inbound",
        {"from": ADA, "to": "hello@brightdesk.example", "subject": "Unsubscribe",
         "text": "", "message_id": "<u1@example.com>"},
        expect=201,
    )  # fmt: skip
    assert (received["outcome"], received["handoff_id"]) == ("unsubscribed", None)
    consent = await room.backend.consent(person)
    assert consent[("email", "marketing")] == "withdrawn"
    ledger = await room.backend.api.get(f"/api/v1/profiles/{person}/consent")
    assert ledger["ledger"][-1]["channel_metadata"]["method"] == "mailto"
    assert (await room.agent.get("/api/v1/handoffs?status=open"))["items"] == []
    bad = await room.backend.api.post(
        "/api/v1/email/inbound", {"from": "nobody", "text": "hi"}, expect=422
    )
    assert bad["errors"][0]["pointer"] == "/from"
