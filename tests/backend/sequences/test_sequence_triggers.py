"""Sequences started by the conversation and by segments: the bot's `intent_expressed`
and `form_completed` reports, a demo the bot books (through the events API, as bot/conversation_events.py
sends them) and people entering a segment (backend.sequences.segment_entries). What the person
notices is the follow-up text; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from backend.api.keys import DIRECTORY, SEQUENCES, SESSIONS, WORKER
from backend.core.clock import FixedClock
from backend.core.models import Enrolment, Segment, SegmentMember
from backend.core.settings import PROJECT_ROOT
from backend.sequences.definition import SequenceDefinition
from backend.sequences.segment_entries import sweep_segment_entries
from tests.backend.conftest import StartTexting, TextingBackend

ASKED = "+14155552671"
OTHER = "+14155550199"
THIRD = "+14155550123"

SEQUENCES_UNDER_TEST = {
    "pricing-follow-up": """
trigger: {intent: ask_price}
steps:
  - id: prices
    send:
      channel: sms
      purpose: transactional
      template: "Our plans start at $19 a seat: brightdesk.example/pricing"
""",
    "faq-follow-up": """
trigger: {intent: faq}
steps:
  - id: more
    send:
      channel: sms
      purpose: transactional
      template: "More on {{ event.properties.intent }}: brightdesk.example/help"
""",
    "lead-thanks": """
trigger: {form_completed: lead_form}
steps:
  - id: thanks
    send:
      channel: sms
      purpose: transactional
      template: Thanks for telling us about your team!
""",
    "demo-prep": """
trigger: {event: demo_booked}
steps:
  - id: prep
    send:
      channel: sms
      purpose: transactional
      template: "See you at your demo! Bring your questions."
""",
    "offer-follow-up": """
trigger: {event: offer_viewed}
entry: {consent: web}
steps:
  - id: offer
    send:
      channel: sms
      purpose: transactional
      template: "Here is the offer you looked at: brightdesk.example/offer"
""",
    "big-team-welcome": """
trigger: {segment_entered: big-teams}
reentry: always
steps:
  - id: welcome
    send:
      channel: sms
      purpose: transactional
      template: "Big team? Ask for our {{ event.properties.segment }} plan."
""",
}
PRICES = "Our plans start at $19 a seat: brightdesk.example/pricing"
THANKS = "Thanks for telling us about your team!"
WELCOME = "Big team? Ask for our big-teams plan."
DEMO_PREP = "See you at your demo! Bring your questions."
OFFER = "Here is the offer you looked at: brightdesk.example/offer"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sequences").mkdir(parents=True)
    for name in ("business.yml", "scoring.yml", "catalog.yml"):
        shutil.copy(PROJECT_ROOT / "data" / name, folder)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", folder / "segments")
    for name, text in SEQUENCES_UNDER_TEST.items():
        (folder / "sequences" / f"{name}.yml").write_text(text)
    return folder


@dataclass
class Service:
    backend: TextingBackend
    clock: FixedClock

    async def bot_reports(
        self, number: str, type_: str, key: str, **properties: Any
    ) -> dict[str, Any]:
        """What the bot's event broker posts for a person texting from `number`."""
        return await self.backend.api.post(
            "/api/v1/events",
            {"type": type_, "identity": {"kind": "sms", "address": number},
             "properties": properties, "idempotency_key": key},
        )  # fmt: skip

    async def run_due(self) -> None:
        while await self.backend.app[WORKER].tick():
            pass
        await self.backend.settle()

    def texts_to(self, number: str) -> list[str]:
        return self.backend.sent_to(number)

    async def person(self, number: str, **attributes: Any) -> str:
        return str((await self.backend.api.identify("sms", number, **attributes))["id"])

    async def change(self, profile_id: str, **attributes: Any) -> None:
        await self.backend.api.call(
            "PATCH", f"/api/v1/profiles/{profile_id}", {"attributes": attributes}
        )

    async def sweep(self, sequences: list[SequenceDefinition] | None = None) -> int:
        app = self.backend.app
        watching = app[SEQUENCES] if sequences is None else sequences
        return await sweep_segment_entries(
            app[SESSIONS], watching, self.clock, app[DIRECTORY].rules
        )

    async def enrolments(self, sequence: str) -> int:
        async with self.backend.app[SESSIONS]() as session:
            found = await session.scalar(
                select(func.count()).select_from(Enrolment).where(Enrolment.sequence == sequence)
            )
        return int(found or 0)


@pytest.fixture
async def service(start_texting: StartTexting, clock: FixedClock, data_dir: Path) -> Service:
    backend = await start_texting(data_dir=data_dir, scheduler_enabled=False)
    return Service(backend, clock)


# ------------------------------------------------------------------- intents and forms


async def test_a_person_who_asked_about_pricing_gets_the_pricing_follow_up_once(
    service: Service,
) -> None:
    first = await service.bot_reports(
        ASKED, "intent_expressed", "rasa:intent:1", intent="ask_price"
    )
    again = await service.bot_reports(
        ASKED, "intent_expressed", "rasa:intent:1", intent="ask_price"
    )
    assert (first["stored"], again["duplicates"]) == (1, 1)
    await service.bot_reports(OTHER, "intent_expressed", "rasa:intent:2", intent="greet")
    await service.run_due()

    assert service.texts_to(ASKED) == [PRICES]
    assert service.texts_to(OTHER) == []
    # Asking again while in the sequence does not start it twice.
    await service.bot_reports(ASKED, "intent_expressed", "rasa:intent:3", intent="ask_price")
    await service.run_due()
    assert service.texts_to(ASKED) == [PRICES]


async def test_one_batch_enrols_each_person_once_and_only_whom_the_conditions_let_in(
    service: Service,
) -> None:
    agreed = await service.person(OTHER)
    await service.backend.api.post(
        f"/api/v1/profiles/{agreed}/consent",
        {"channel": "web", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )

    def reported(number: str, type_: str, key: str, **properties: Any) -> dict[str, Any]:
        return {"type": type_, "identity": {"kind": "sms", "address": number},
                "properties": properties, "idempotency_key": key}  # fmt: skip

    answer = await service.backend.api.post(
        "/api/v1/events",
        {"events": [
            reported(OTHER, "offer_viewed", "batch:1"),
            reported(OTHER, "offer_viewed", "batch:2"),  # twice in one batch: enrolled once
            reported(ASKED, "offer_viewed", "batch:3"),  # no web consent: not enrolled
            reported(ASKED, "intent_expressed", "batch:4", intent="ask_price"),
            reported(THIRD, "intent_expressed", "batch:5", intent="ask_price"),
            reported(THIRD, "intent_expressed", "batch:6", intent="greet"),
        ]},
    )  # fmt: skip
    assert answer["stored"] == 6
    await service.run_due()

    assert service.texts_to(OTHER) == [OFFER]
    assert service.texts_to(ASKED) == [PRICES]
    assert service.texts_to(THIRD) == [PRICES]
    assert await service.enrolments("offer-follow-up") == 1
    assert await service.enrolments("pricing-follow-up") == 2


async def test_a_person_enrolled_by_another_request_meanwhile_does_not_cost_the_others(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request enrols ASKED between the batch's reading and its writing (played
    by hiding ASKED's enrolment from the batch's read): the batch's write meets the
    database's one-active-enrolment rule, and the others of the batch are still in."""
    await service.bot_reports(ASKED, "intent_expressed", "race:1", intent="ask_price")
    assert await service.enrolments("pricing-follow-up") == 1
    from backend.sequences import enrolment

    async def nobody_enrolled_yet(*_: Any) -> dict[Any, Any]:
        return {}

    monkeypatch.setattr(enrolment, "_earlier", nobody_enrolled_yet)
    answer = await service.backend.api.post(
        "/api/v1/events",
        {"events": [
            {"type": "intent_expressed", "identity": {"kind": "sms", "address": number},
             "properties": {"intent": "ask_price"}, "idempotency_key": f"race:{n}"}
            for n, number in ((2, ASKED), (3, OTHER), (4, THIRD))
        ]},
    )  # fmt: skip
    assert answer["stored"] == 3
    await service.run_due()
    assert await service.enrolments("pricing-follow-up") == 3
    assert [service.texts_to(n) for n in (ASKED, OTHER, THIRD)] == [[PRICES]] * 3


async def test_a_trigger_on_faq_takes_any_faq_answer_and_names_it(service: Service) -> None:
    await service.bot_reports(ASKED, "intent_expressed", "k1", intent="faq/free_trial")
    await service.run_due()
    assert service.texts_to(ASKED) == ["More on faq/free_trial: brightdesk.example/help"]


async def test_a_completed_lead_form_enrols_and_other_forms_do_not(service: Service) -> None:
    await service.bot_reports(ASKED, "form_completed", "f1", form="lead_form")
    await service.bot_reports(OTHER, "form_completed", "f2", form="subscribe_form")
    await service.run_due()
    assert service.texts_to(ASKED) == [THANKS]
    assert service.texts_to(OTHER) == []


async def test_the_bots_reports_are_events_like_any_other(service: Service) -> None:
    person = await service.person(ASKED)
    await service.bot_reports(ASKED, "intent_expressed", "k1", intent="book_demo")
    await service.bot_reports(ASKED, "form_completed", "k2", form="lead_form")
    listed = await service.backend.api.get(f"/api/v1/profiles/{person}/events")
    assert [(e["type"], e["properties"]) for e in listed["items"]] == [
        ("form_completed", {"form": "lead_form"}),
        ("intent_expressed", {"intent": "book_demo"}),
    ]


async def test_a_demo_booked_in_conversation_enrols_the_person_in_the_demo_sequence(
    service: Service,
) -> None:
    """The bot books through the demos API (actions/demo.py); the booking is recorded as
    a `demo_booked` event like any other, so the sequence it triggers starts."""
    person = await service.person(ASKED)
    await service.backend.api.post(
        "/api/v1/demos",
        {"profile_id": person, "starts_at": "2026-03-05T15:00:00Z", "conversation_id": ASKED},
        expect=201,
    )
    await service.run_due()
    assert service.texts_to(ASKED) == [DEMO_PREP]
    assert await service.enrolments("demo-prep") == 1


# ------------------------------------------------------------------------ segments


async def test_someone_entering_a_segment_gets_its_sequence_once_members_already_there_do_not(
    service: Service,
) -> None:
    await service.person(ASKED, team_size=80)  # a big team before anyone watched
    newcomer = await service.person(OTHER, team_size=10)
    assert await service.sweep() == 0  # the first look: who is in it already
    await service.run_due()
    assert service.texts_to(ASKED) == []

    await service.change(newcomer, team_size=60)
    assert await service.sweep() == 1
    assert await service.sweep() == 0
    await service.run_due()
    assert service.texts_to(OTHER) == [WELCOME]
    assert service.texts_to(ASKED) == []


async def test_leaving_a_segment_and_coming_back_is_entering_again(service: Service) -> None:
    person = await service.person(ASKED, team_size=10)
    await service.sweep()
    await service.change(person, team_size=60)
    await service.sweep()
    await service.run_due()
    await service.change(person, team_size=5)
    assert await service.sweep() == 0
    await service.change(person, team_size=70)
    assert await service.sweep() == 1  # reentry: always
    await service.run_due()
    assert service.texts_to(ASKED) == [WELCOME, WELCOME]


async def test_a_new_segment_definition_enrols_nobody_at_once(service: Service) -> None:
    await service.person(ASKED, team_size=20)
    await service.sweep()
    # The file now says 10 people is a big team (applied when the backend restarts).
    async with service.backend.app[SESSIONS].begin() as session:
        await session.execute(
            update(Segment)
            .where(Segment.name == "big-teams")
            .values(rule={"field": "attributes.team_size", "op": "gte", "value": 10})
        )
    assert await service.sweep() == 0
    newcomer = await service.person(OTHER, team_size=5)
    await service.change(newcomer, team_size=12)
    assert await service.sweep() == 1
    await service.run_due()
    assert (service.texts_to(ASKED), service.texts_to(OTHER)) == ([], [WELCOME])


async def test_a_segment_watched_again_starts_afresh(service: Service) -> None:
    person = await service.person(ASKED, team_size=10)
    await service.sweep()
    assert await service.sweep(sequences=[]) == 0  # the sequence was removed for a while
    async with service.backend.app[SESSIONS]() as session:
        assert await session.scalar(select(func.count()).select_from(SegmentMember)) == 0
    await service.change(person, team_size=90)  # entered while nobody watched
    assert await service.sweep() == 0
    await service.run_due()
    assert service.texts_to(ASKED) == []


async def test_two_sweeps_at_once_enrol_a_newcomer_once(service: Service) -> None:
    person = await service.person(ASKED, team_size=10)
    await service.sweep()
    await service.change(person, team_size=60)
    await asyncio.gather(service.sweep(), service.sweep())
    assert await service.enrolments("big-team-welcome") == 1
    await service.run_due()
    assert service.texts_to(ASKED) == [WELCOME]
