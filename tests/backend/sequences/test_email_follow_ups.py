"""Follow-up sequences that send e-mail: the scheduler renders the subject and the HTML in
the sandbox, inlines the CSS and sends through the e-mail door, over real SMTP on
loopback to the local mail sink (SQLite and PostgreSQL). Consent is asked at the moment
of sending: an unconfirmed address gets nothing, an unsubscribe between scheduling and
sending stops the send, a bounced address is suppressed."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend.api.keys import SESSIONS, WORKER
from backend.core.clock import FixedClock
from backend.core.models import Enrolment, Message, SequenceWork
from backend.core.settings import PROJECT_ROOT
from backend.devtools.mail_sink import MailSink, Received
from tests.backend.conftest import (
    StartTexting,
    TextingBackend,
    ask_for_email_marketing,
    follow_confirmation_link,
)

PUBLIC = "https://parley.example"
STOP = "Reply STOP to opt out."

SEQUENCES = {
    # The welcome e-mail the morning after signing up, with the design's own unsubscribe
    # link, a style sheet (inlined on the way out) and the person's name (escaped).
    "welcome": """
trigger: {event: signed_up}
entry: {consent: email}
steps:
  - id: next-morning
    wait: {for: 1d, until: "10:00"}
  - id: welcome
    send:
      channel: email
      subject: "Welcome to {{ business.name }}, {{ profile.first_name or 'friend' }}"
      template: |
        <style>h1 { color: #2554c7; } .small { font-size: 12px; }</style>
        <h1>Hi {{ profile.first_name or "there" }}!</h1>
        <p>Three things to try in your first week:</p>
        <ul><li>Connect your inbox</li><li>Invite your team</li></ul>
        <p class="small"><a href="{{ unsubscribe_url }}">No more of these</a></p>
""",
    # An A/B test of subject lines, at once.
    "subjects": """
trigger: {event: guide_requested}
steps:
  - id: guide
    send:
      channel: email
      purpose: transactional
      variants:
        - {name: plain, subject: Your guide, template: "<p>Here is your guide.</p>"}
        - {name: eager, subject: Your guide is here!, template: "<p>Here is your guide!</p>"}
""",
    # Whichever channel the person agreed to last; with a subject, e-mail is one.
    "best-news": f"""
trigger: {{event: news_published}}
steps:
  - id: news
    send:
      channel: best
      subject: News from {{{{ business.name }}}}
      template: "Our spring release is out. {STOP}"
""",
}


@dataclass
class EmailDrip:
    backend: TextingBackend
    sink: MailSink
    clock: FixedClock

    async def person(self, address: str, consent: str = "confirmed", **fields: Any) -> str:
        """Someone in London with e-mail marketing consent asked and `confirmed` by the
        confirmation e-mail's link, only `asked`, or `none`."""
        api = self.backend.api
        profile = await api.identify("email", address, timezone="Europe/London", **fields)
        person = str(profile["id"])
        if consent == "none":
            return person
        await ask_for_email_marketing(api, person)
        if consent == "confirmed":
            [asked] = self.to(address)
            await follow_confirmation_link(self.backend.client, asked, PUBLIC)
        self.sink.received.clear()
        return person

    async def event(self, person: str, type_: str) -> None:
        await self.backend.api.post(
            "/api/v1/events", {"type": type_, "profile_id": person, "properties": {}}
        )

    async def at(self, when: datetime) -> None:
        self.clock.advance(when - self.clock.now())
        while await self.backend.app[WORKER].tick():
            pass

    def to(self, address: str) -> list[Received]:
        return [r for r in self.sink.received if r.rcpt_tos == [address]]

    async def steps(self, person: str) -> list[tuple[str, str | None]]:
        async with self.backend.app[SESSIONS]() as session:
            rows = await session.scalars(
                select(SequenceWork)
                .join(Enrolment, Enrolment.id == SequenceWork.enrolment_id)
                .where(Enrolment.profile_id == uuid.UUID(person))
                .order_by(SequenceWork.id)
            )
            return [(w.step, w.outcome) for w in rows]


@pytest.fixture
async def drip(
    start_texting: StartTexting, clock: FixedClock, tmp_path: Path
) -> AsyncIterator[EmailDrip]:
    data = tmp_path / "data"
    (data / "sequences").mkdir(parents=True)
    for name in ("business.yml", "scoring.yml"):
        shutil.copy(PROJECT_ROOT / "data" / name, data)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", data / "segments")
    for name, text in SEQUENCES.items():
        (data / "sequences" / f"{name}.yml").write_text(text)
    sink = MailSink()
    server = await asyncio.get_running_loop().create_server(sink.smtp, "127.0.0.1", 0)
    backend = await start_texting(
        data_dir=data, scheduler_enabled=False, smtp_host="127.0.0.1",
        smtp_port=server.sockets[0].getsockname()[1], smtp_security="none",
        public_url=PUBLIC, smtp_timeout_seconds=5.0, email_domain_per_second=1000.0,
    )  # fmt: skip
    yield EmailDrip(backend, sink, clock)
    server.close()


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


async def test_a_sequence_sends_a_marketing_email_the_next_morning_with_its_footer(
    drip: EmailDrip,
) -> None:
    person = await drip.person("ada@example.com", first_name="Ada <b>")
    await drip.event(person, "signed_up")  # Monday 09:30 UTC, 09:30 in London
    await drip.at(utc(2, 9, 31))
    await drip.at(utc(3, 9, 59))
    assert drip.to("ada@example.com") == []
    await drip.at(utc(3, 10))

    [received] = drip.to("ada@example.com")
    message = received.message
    assert str(message["Subject"]) == "Welcome to Brightdesk, Ada <b>"
    assert str(message["From"]) == "Brightdesk <hello@brightdesk.example>"
    assert str(message["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    [link] = re.findall(r"<(https://[^>]+)>", str(message["List-Unsubscribe"]))
    assert link.startswith(f"{PUBLIC}/email/unsubscribe/")
    page, text = received.part("html") or "", received.part("plain") or ""
    # The name is escaped in the HTML, the style sheet is inlined, and the design's own
    # link is this message's unsubscribe link; the footer says who, where and why.
    assert "Hi Ada &lt;b&gt;!" in page and "<b>!" not in page
    assert '<h1 style="color: #2554c7;">' in page and "<style>" not in page
    assert f'<a href="{link}">No more of these</a>' in page
    assert "unsubscribe.parley.invalid" not in page + text
    assert (
        "Brightdesk, 548 Market St, Suite 300" in text and "agreed to hear from Brightdesk" in text
    )
    assert "Hi Ada <b>!" in text and "* Connect your inbox" in text
    assert f"[No more of these]({link})" in text

    assert await drip.steps(person) == [("next-morning", "waited"), ("welcome", "sent")]
    async with drip.backend.app[SESSIONS]() as session:
        [sent] = await session.scalars(select(Message).where(Message.sequence_step.is_not(None)))
    assert (sent.subject, sent.sequence_step, sent.status) == (
        "Welcome to Brightdesk, Ada <b>", "welcome", "sent",
    )  # fmt: skip

    # The link in it withdraws consent at once: nothing more is sent.
    assert (await drip.backend.client.post(link.removeprefix(PUBLIC))).status == 200
    consent = await drip.backend.consent(person)
    assert consent[("email", "marketing")] == "withdrawn"


async def test_an_unconfirmed_address_gets_nothing(drip: EmailDrip) -> None:
    # Asked, never confirmed: not enrolled where entry needs e-mail consent; where it
    # does not, the step is skipped for consent at sending.
    person = await drip.person("grace@example.com", consent="asked")
    await drip.event(person, "signed_up")
    await drip.at(utc(3, 10))
    assert await drip.steps(person) == []
    await drip.event(person, "news_published")
    await drip.at(utc(3, 12))
    assert drip.to("grace@example.com") == []
    assert await drip.steps(person) == [("news", "skipped_consent")]


async def test_an_unsubscribe_between_scheduling_and_sending_stops_the_email(
    drip: EmailDrip,
) -> None:
    person = await drip.person("ada@example.com")
    await drip.event(person, "signed_up")
    await drip.at(utc(2, 9, 31))  # the welcome is due Tuesday 10:00
    # A marketing e-mail sent meanwhile carries the one-click link; the person uses it.
    sent = await drip.backend.api.post(
        "/api/v1/messages",
        {"channel": "email", "to": "ada@example.com", "subject": "Spring news",
         "body": "Our spring release is out.", "purpose": "marketing"},
        expect=201,
    )  # fmt: skip
    assert sent["messages"][0]["status"] == "sent"
    [news] = drip.to("ada@example.com")
    [link] = re.findall(r"<(https://[^>]+)>", str(news.message["List-Unsubscribe"]))
    one_click = await drip.backend.client.post(
        link.removeprefix(PUBLIC), data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click.status == 200
    await drip.at(utc(3, 10))
    assert len(drip.to("ada@example.com")) == 1
    assert await drip.steps(person) == [("next-morning", "waited"), ("welcome", "skipped_consent")]


async def test_a_bounced_address_is_suppressed_and_gets_nothing_more(drip: EmailDrip) -> None:
    # The receiving server says there is no such mailbox (the sink's magic address).
    person = await drip.person("bounce-ada@example.com", consent="none")
    await drip.event(person, "guide_requested")
    await drip.at(utc(2, 9, 31))
    assert drip.to("bounce-ada@example.com") == []
    [(step, outcome)] = await drip.steps(person)
    assert (step, outcome) == ("guide", "failed")
    again = await drip.backend.api.post(
        "/api/v1/messages",
        {"channel": "email", "to": "bounce-ada@example.com", "subject": "Hello",
         "body": "Hello again.", "purpose": "transactional"},
        expect=422,
    )  # fmt: skip
    assert "suppressed" in again["detail"]


async def test_subject_lines_are_ab_tested_and_best_may_choose_email(drip: EmailDrip) -> None:
    subjects: set[str] = set()
    for number in range(12):
        address = f"reader{number}@example.com"
        person = await drip.person(address)
        await drip.event(person, "guide_requested")
        await drip.at(drip.clock.now())
        [received] = drip.to(address)
        subjects.add(str(received.message["Subject"]))
        assert "List-Unsubscribe" not in received.message  # transactional
    assert subjects == {"Your guide", "Your guide is here!"}

    # `best`: the person agreed to e-mail (and to nothing else): the text goes by e-mail.
    person = await drip.person("lin@example.com")
    await drip.event(person, "news_published")
    await drip.at(drip.clock.now())
    [received] = drip.to("lin@example.com")
    assert str(received.message["Subject"]) == "News from Brightdesk"
    assert "Our spring release is out." in (received.part("plain") or "")
