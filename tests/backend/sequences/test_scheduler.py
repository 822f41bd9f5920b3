"""Follow-up sequences run by the scheduler, in sequence time: a FixedClock moves days in
seconds and the worker's `tick()` is called directly. Texts go through the one door to
the local Twilio emulator (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from backend.api.app import scheduler_worker
from backend.api.keys import DIRECTORY, SEQUENCES, SESSIONS, WEB_DOOR, WORKER
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.models import Enrolment, Message, Profile, SenderPace, SequenceWork
from backend.core.settings import PROJECT_ROOT
from backend.devtools.twilio_emulator import TwilioEmulator
from backend.messaging.door import MessagePurpose, SendRefused
from backend.messaging.guards import parse_time_of_day, quiet_until, zone_for
from backend.messaging.held import Held
from backend.messaging.web_door import WebPush
from backend.sequences.definition import WaitUntil
from backend.sequences.enrolment import EntryRefused, TriggerEvent, enrol
from backend.sequences.scheduler.deciding import Decider
from backend.sequences.scheduler.plans import PausePlan
from backend.sequences.scheduler.timing import roll_for, wait_until
from backend.sequences.scheduler.worker import Worker
from backend.webchat.sessions import signing_secret
from message_rules import door_signature
from tests.backend.conftest import Api, IssueToken, StartTexting, TextingBackend

LA_PERSON = "+14155552671"  # a San Francisco number: America/Los_Angeles
BERLIN_PERSON = "+4915112345678"
STOP = "Reply STOP to opt out."

SEQUENCES_UNDER_TEST = {
    # The first tip the morning after a trial starts, then a note on the profile.
    "nurture": f"""
trigger: {{event: trial_started}}
entry: {{consent: sms}}
reentry: never
steps:
  - id: day-two
    wait: {{for: 1d, until: "10:00"}}
  - id: tip
    send:
      channel: sms
      template: Hi {{{{ profile.first_name or "there" }}}}, day two of your trial. {STOP}
  - id: mark
    update:
      set: {{nurtured: "yes"}}
""",
    # A text as soon as a coupon is asked for (quiet hours apply).
    "coupon": f"""
trigger: {{event: coupon_requested}}
steps:
  - id: offer
    send:
      channel: sms
      template: Your coupon is SPRING10. {STOP}
""",
    # Another marketing text at once, for the frequency cap.
    "tips": f"""
trigger: {{event: tips_requested}}
steps:
  - id: tip
    send:
      channel: sms
      template: A tip for you. {STOP}
""",
    # Two mornings at 10:00 their time, across a DST change: lessons the person asked
    # for (transactional, so the marketing cap of one a day does not hold the second
    # back on the 23-hour day).
    "mornings": f"""
trigger: {{event: course_started}}
steps:
  - id: first-morning
    wait: {{until: "10:00"}}
  - id: lesson-one
    send:
      channel: sms
      purpose: transactional
      template: Lesson one. {STOP}
  - id: second-morning
    wait: {{until: "10:00"}}
  - id: lesson-two
    send:
      channel: sms
      purpose: transactional
      template: Lesson two. {STOP}
""",
    # Half the people are the control group and get nothing.
    "half-holdout": f"""
trigger: {{event: survey_done}}
steps:
  - id: thanks
    send:
      channel: sms
      holdout: 0.5
      template: Thanks for the survey! {STOP}
  - id: noted
    update:
      set: {{survey_thanked: "yes"}}
""",
    # A day after the webinar: thanks to those who came, sorry to the others.
    "webinar": """
trigger: {event: webinar_registered}
steps:
  - id: day-after
    wait: 1d
  - id: did-they-come
    branch:
      - when: {event: webinar_attended}
        goto: thanks
    otherwise: sorry
  - id: thanks
    send: {channel: sms, purpose: transactional, template: Thanks for coming.}
    then: exit
  - id: sorry
    send: {channel: sms, purpose: transactional, template: Sorry we missed you.}
""",
    # A question the bot knows (bot/domain/follow_up.yml): a "yes" means yes to a demo.
    "offer": """
trigger: {event: pricing_viewed}
steps:
  - id: offer
    send:
      channel: sms
      purpose: transactional
      asks: demo
      template: Want a walkthrough? Reply YES.
""",
    # Points, then a person takes over.
    "handover": """
trigger: {event: demo_requested}
steps:
  - id: points
    update: {add_points: 15, set: {wants_demo: "yes"}}
  - id: agent
    handoff: {reason: Asked for a demo twice; call them today.}
""",
    # Into the web chat.
    "web-nudge": """
trigger: {event: cart_left}
steps:
  - id: nudge
    send: {channel: web, purpose: transactional, template: Your cart is waiting.}
""",
    # A call that speaks the text.
    "call-back": """
trigger: {event: callback_requested}
steps:
  - id: call
    send:
      channel: voice
      purpose: transactional
      asks: demo
      template: Hi, it's Brightdesk. Would you like a demo this week?
""",
    # Whichever channel the person agreed to last.
    "best-nudge": """
trigger: {event: price_dropped}
steps:
  - id: nudge
    send: {channel: best, template: "Prices dropped 10%. Reply STOP to opt out."}
""",
    # Transactional: no quiet hours, no marketing consent needed.
    "receipt": """
trigger: {event: order_paid}
reentry: always
steps:
  - id: receipt
    send:
      channel: sms
      purpose: transactional
      template: Thanks, your order is paid.
""",
}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sequences").mkdir(parents=True)
    for name in ("business.yml", "scoring.yml"):
        shutil.copy(PROJECT_ROOT / "data" / name, folder)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", folder / "segments")
    for name, text in SEQUENCES_UNDER_TEST.items():
        (folder / "sequences" / f"{name}.yml").write_text(text)
    return folder


@dataclass
class Drip:
    """The app with a Twilio emulator; the tests run its worker one tick at a time."""

    backend: TextingBackend
    clock: FixedClock

    @property
    def api(self) -> Api:
        return self.backend.api

    @property
    def twilio(self) -> TwilioEmulator:
        return self.backend.twilio

    @property
    def app(self) -> web.Application:
        return self.backend.app

    @property
    def worker(self) -> Worker:
        return self.app[WORKER]

    def other_worker(self, owner: str) -> Worker:
        worker = scheduler_worker(self.app)
        worker.owner = owner
        return worker

    def sent_to(self, number: str) -> list[str]:
        return self.backend.sent_to(number)

    async def texted(self, number: str, body: str) -> None:
        await self.backend.texted(number, body)

    async def person(self, number: str, subscribed: bool = True, **fields: Any) -> str:
        profile = await self.api.identify("sms", number, **fields)
        if subscribed:
            await self.backend.subscribe(profile["id"])
        return str(profile["id"])

    async def web_visitor(self, session: str) -> str:
        """Someone with a number (not subscribed) who also chats on the web."""
        person = await self.person(LA_PERSON, subscribed=False)
        await self.api.post(
            f"/api/v1/profiles/{person}/identities", {"kind": "web", "address": session},
            expect=None,
        )  # fmt: skip
        return person

    async def event(self, profile_id: str, type_: str, **properties: Any) -> None:
        await self.api.post(
            "/api/v1/events",
            {"type": type_, "profile_id": profile_id, "properties": properties},
        )

    async def at(self, when: datetime) -> int:
        """Move the clock to `when` and let the worker run what is due."""
        assert when >= self.clock.now()
        self.clock.advance(when - self.clock.now())
        return await self.run_due()

    async def run_due(self) -> int:
        total = 0
        while done := await self.worker.tick():
            total += done
        return total

    async def enrolments(self, profile_id: str) -> list[Enrolment]:
        async with self.app[SESSIONS]() as session:
            rows = await session.scalars(
                select(Enrolment)
                .where(Enrolment.profile_id == uuid.UUID(profile_id))
                .order_by(Enrolment.enrolled_at)
            )
            return list(rows)

    async def work(self, profile_id: str) -> list[SequenceWork]:
        async with self.app[SESSIONS]() as session:
            rows = await session.scalars(
                select(SequenceWork)
                .join(Enrolment, Enrolment.id == SequenceWork.enrolment_id)
                .where(Enrolment.profile_id == uuid.UUID(profile_id))
                .order_by(SequenceWork.id)
            )
            return list(rows)


@pytest.fixture
async def drip(start_texting: StartTexting, clock: FixedClock, data_dir: Path) -> Drip:
    # The tests run the worker themselves, one tick at a time.
    backend = await start_texting(data_dir=data_dir, scheduler_enabled=False)
    return Drip(backend, clock)


@contextmanager
def twilio_unreachable(drip: Drip, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Twilio's API cannot be reached: every send's outcome is unknown."""
    door = drip.worker.door
    assert door is not None

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(door.texts, "create", unreachable)
        yield


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# ------------------------------------------------------------------- time, unit by unit

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def test_a_wait_until_ten_lands_at_ten_on_both_sides_of_the_dst_change() -> None:
    until_ten = WaitUntil(until=parse_time_of_day("10:00"))
    # Saturday March 7 2026, 10:00 PST is 18:00 UTC; Sunday March 8 is PDT: 17:00 UTC.
    assert wait_until(utc(2026, 3, 7, 12), until_ten, LOS_ANGELES) == utc(2026, 3, 7, 18)
    assert wait_until(utc(2026, 3, 7, 18), until_ten, LOS_ANGELES) == utc(2026, 3, 8, 17)


def test_quiet_hours_end_at_eight_in_the_persons_own_time() -> None:
    night, morning = parse_time_of_day("21:00"), parse_time_of_day("08:00")
    # 05:30 UTC: 21:30 in Los Angeles (quiet until 08:00 there), 06:30 in Berlin (quiet).
    assert quiet_until(utc(2026, 3, 2, 5, 30), night, morning, LOS_ANGELES) == utc(2026, 3, 2, 16)
    assert quiet_until(utc(2026, 3, 2, 5, 30), night, morning, ZoneInfo("Europe/Berlin")) == utc(
        2026, 3, 2, 7
    )
    assert quiet_until(utc(2026, 3, 2, 20), night, morning, LOS_ANGELES) is None


def test_the_time_zone_comes_from_the_profile_then_the_number_then_the_business() -> None:
    assert zone_for("Europe/Paris", LA_PERSON, "UTC").key == "Europe/Paris"
    assert zone_for(None, LA_PERSON, "UTC").key == "America/Los_Angeles"
    assert zone_for("Not/AZone", None, "America/Chicago").key == "America/Chicago"


# --------------------------------------------------------------------- whole sequences


async def test_a_started_trial_gets_its_first_tip_at_ten_the_next_morning_their_time(
    drip: Drip,
) -> None:
    # The clock starts on Monday March 2 2026, 09:30 UTC: 01:30 in San Francisco.
    person = await drip.person(LA_PERSON, first_name="Ada")
    await drip.event(person, "trial_started")
    [enrolment] = await drip.enrolments(person)
    assert (enrolment.sequence, enrolment.status) == ("nurture", "active")

    await drip.run_due()  # the wait: at least a day, then 10:00 in Los Angeles
    await drip.at(utc(2026, 3, 3, 17, 59))  # 09:59 PST on Tuesday
    assert drip.sent_to(LA_PERSON)[1:] == []  # (the first text asked for the YES)
    await drip.at(utc(2026, 3, 3, 18, 0))
    assert drip.sent_to(LA_PERSON)[1:] == [f"Hi Ada, day two of your trial. {STOP}"]

    [enrolment] = await drip.enrolments(person)
    assert (enrolment.status, enrolment.exit_reason) == ("completed", "completed")
    profile = await drip.api.get(f"/api/v1/profiles/{person}")
    assert profile["attributes"]["nurtured"] == "yes"
    outcomes = [(w.step, w.outcome) for w in await drip.work(person)]
    assert outcomes == [("day-two", "waited"), ("tip", "sent"), ("mark", "updated")]


async def test_quiet_hours_hold_a_text_until_eight_in_each_persons_time_zone(
    drip: Drip,
) -> None:
    in_berlin = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    in_california = await drip.person(LA_PERSON)
    # 09:30 UTC: 10:30 in Berlin, 01:30 in San Francisco.
    for person in (in_berlin, in_california):
        await drip.event(person, "coupon_requested")
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[1:] == [f"Your coupon is SPRING10. {STOP}"]
    assert drip.sent_to(LA_PERSON)[1:] == []
    [held] = await drip.work(in_california)
    assert (held.outcome, held.due_at) == ("rescheduled", utc(2026, 3, 2, 16))

    await drip.at(utc(2026, 3, 2, 15, 59))
    assert drip.sent_to(LA_PERSON)[1:] == []
    await drip.at(utc(2026, 3, 2, 16, 0))  # 08:00 PST
    assert drip.sent_to(LA_PERSON)[1:] == [f"Your coupon is SPRING10. {STOP}"]


async def test_mornings_stay_at_ten_local_across_the_dst_change(drip: Drip) -> None:
    await drip.at(utc(2026, 3, 6, 20))  # Friday 12:00 PST
    person = await drip.person(LA_PERSON)
    await drip.event(person, "course_started")
    await drip.run_due()

    await drip.at(utc(2026, 3, 7, 17, 59))
    assert drip.sent_to(LA_PERSON)[1:] == []
    await drip.at(utc(2026, 3, 7, 18))  # Saturday 10:00 PST
    assert drip.sent_to(LA_PERSON)[1:] == [f"Lesson one. {STOP}"]
    await drip.at(utc(2026, 3, 8, 16, 59))  # Sunday 09:59 PDT (clocks went forward)
    assert drip.sent_to(LA_PERSON)[1:] == [f"Lesson one. {STOP}"]
    await drip.at(utc(2026, 3, 8, 17))  # Sunday 10:00 PDT
    assert drip.sent_to(LA_PERSON)[1:] == [f"Lesson one. {STOP}", f"Lesson two. {STOP}"]


async def test_consent_withdrawn_after_scheduling_stops_the_text(drip: Drip) -> None:
    person = await drip.person(LA_PERSON)
    await drip.event(person, "trial_started")
    await drip.run_due()  # the tip is scheduled for Tuesday 10:00
    await drip.texted(LA_PERSON, "STOP")
    before = len(drip.sent_to(LA_PERSON))
    await drip.at(utc(2026, 3, 3, 18))
    assert len(drip.sent_to(LA_PERSON)) == before
    [enrolment] = await drip.enrolments(person)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "opted_out")


async def test_reentry_never_refuses_a_second_enrolment(drip: Drip) -> None:
    person = await drip.person(LA_PERSON)
    await drip.event(person, "trial_started")
    await drip.event(person, "trial_started")  # still in it: not enrolled twice
    assert len(await drip.enrolments(person)) == 1
    await drip.run_due()
    await drip.at(utc(2026, 3, 3, 18))
    [enrolment] = await drip.enrolments(person)
    assert enrolment.status == "completed"

    await drip.event(person, "trial_started")
    assert len(await drip.enrolments(person)) == 1
    app = drip.app
    nurture = next(s for s in app[SEQUENCES] if s.name == "nurture")
    async with app[SESSIONS].begin() as session:
        profile = await session.get(Profile, uuid.UUID(person))
        assert profile is not None
        with pytest.raises(EntryRefused) as refused:
            await enrol(
                session, nurture, profile, TriggerEvent("trial_started"), drip.clock,
                app[DIRECTORY].rules,
            )  # fmt: skip
    assert refused.value.kind == "reentry-refused"


async def test_people_in_the_holdout_get_nothing_but_still_move_on(drip: Drip) -> None:
    for attempt in range(40):
        number = f"+1415555{attempt:04d}"
        person = await drip.person(number, timezone="Europe/Berlin")
        if roll_for(uuid.UUID(person), "half-holdout", "thanks") < 0.5:
            break
    else:
        pytest.fail("nobody fell in the holdout")
    await drip.event(person, "survey_done")
    await drip.run_due()
    assert drip.sent_to(number)[1:] == []
    outcomes = [(w.step, w.outcome) for w in await drip.work(person)]
    assert outcomes == [("thanks", "held_out"), ("noted", "updated")]
    [enrolment] = await drip.enrolments(person)
    assert enrolment.variants == {"thanks": None}
    assert enrolment.status == "completed"


async def test_work_claimed_by_two_workers_at_once_is_sent_once(drip: Drip) -> None:
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "order_paid")
    first, second = drip.other_worker("first"), drip.other_worker("second")
    ran = await asyncio.gather(first.tick(), second.tick())
    assert sorted(ran) == [0, 1]
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]

    # The same row run again by the worker that did not claim it: nothing happens.
    [work] = await drip.work(person)
    await second.run_step(work.id)
    await first.run_step(work.id)
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]


async def test_an_expired_lease_is_picked_up_again_and_sent_once(drip: Drip) -> None:
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "order_paid")
    crashed, rescuer = drip.other_worker("crashed"), drip.other_worker("rescuer")
    [work_id] = await crashed.claim()  # …and the worker dies before running it
    assert await rescuer.tick() == 0
    drip.clock.advance(timedelta(seconds=59))
    assert await rescuer.tick() == 0
    drip.clock.advance(timedelta(seconds=2))
    assert await rescuer.tick() == 1
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]
    await crashed.run_step(work_id)  # it comes back to life: its lease is gone
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]
    [work] = await drip.work(person)
    assert (work.outcome, work.lease_owner) == ("sent", None)


async def test_a_send_that_happened_before_a_crash_is_not_repeated(drip: Drip) -> None:
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "order_paid")
    crashed, rescuer = drip.other_worker("crashed"), drip.other_worker("rescuer")
    [work_id] = await crashed.claim()
    # It sent the text, then died before recording the step's outcome.
    async with drip.app[SESSIONS].begin() as session:
        [plan] = await crashed._decide_all(session, [work_id])
    assert not isinstance(plan, PausePlan)
    assert crashed.door is not None
    await crashed.door.send(plan.text)
    drip.clock.advance(timedelta(minutes=2))
    assert await rescuer.tick() == 1
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]
    [work] = await drip.work(person)
    assert work.outcome == "sent" and "(repeated)" in (work.outcome_detail or "")


# ------------------------------------------------------------------------------- the API


async def test_the_api_lists_the_loaded_sequences(drip: Drip) -> None:
    listed = await drip.api.get("/api/v1/sequences")
    nurture = next(s for s in listed["items"] if s["id"] == "nurture")
    assert nurture == {
        "id": "nurture", "description": None, "paused": False, "on_hold": False,
        "trigger": "event:trial_started", "steps": ["day-two", "tip", "mark"],
    }  # fmt: skip


async def test_the_api_enrols_a_person_and_says_why_when_it_cannot(drip: Drip) -> None:
    person = await drip.person(LA_PERSON)
    enrolled = await drip.api.post(
        "/api/v1/sequences/nurture/enrolments", {"profile_id": person}, expect=201
    )
    assert (enrolled["status"], enrolled["current_step"]) == ("active", "day-two")

    again = await drip.api.post(
        "/api/v1/sequences/nurture/enrolments", {"profile_id": person}, expect=409
    )
    assert again["type"] == "urn:parley:problem:already-enrolled"

    unsubscribed = await drip.person(BERLIN_PERSON, subscribed=False)
    refused = await drip.api.post(
        "/api/v1/sequences/nurture/enrolments", {"profile_id": unsubscribed}, expect=409
    )
    assert refused["type"] == "urn:parley:problem:consent-missing"
    assert "marketing on sms" in refused["detail"]

    missing = await drip.api.post(
        "/api/v1/sequences/no-such/enrolments", {"profile_id": person}, expect=404
    )
    assert missing["type"] == "urn:parley:problem:sequence-not-found"
    nobody = await drip.api.post(
        "/api/v1/sequences/nurture/enrolments", {"profile_id": str(uuid.uuid4())}, expect=404
    )
    assert nobody["type"] == "urn:parley:problem:profile-not-found"


async def test_a_text_twilio_could_not_take_is_tried_again_later(
    drip: Drip, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "order_paid")
    with twilio_unreachable(drip, monkeypatch):
        await drip.run_due()
    assert drip.sent_to(LA_PERSON) == []
    await drip.at(drip.clock.now() + timedelta(seconds=59))
    assert drip.sent_to(LA_PERSON) == []
    await drip.at(drip.clock.now() + timedelta(seconds=1))
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]
    steps = [(w.step, w.attempt, w.outcome) for w in await drip.work(person)]
    assert steps == [("receipt", 1, "retry"), ("receipt", 2, "sent")]


async def test_a_text_twilio_took_while_its_answer_was_lost_is_not_sent_again(
    drip: Drip, monkeypatch: pytest.MonkeyPatch
) -> None:
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "order_paid")
    door = drip.worker.door
    assert door is not None
    taken = door.texts.create

    async def answer_lost(*args: Any, **kwargs: Any) -> Any:
        await taken(*args, **kwargs)
        raise TimeoutError("no answer from Twilio")

    with monkeypatch.context() as patched:
        patched.setattr(door.texts, "create", answer_lost)
        await drip.run_due()
    await drip.at(drip.clock.now() + timedelta(seconds=60))
    assert drip.sent_to(LA_PERSON) == ["Thanks, your order is paid."]
    work = await drip.work(person)
    assert [(w.attempt, w.outcome) for w in work] == [(1, "retry"), (2, "sent")]
    assert work[0].send_key == work[1].send_key  # the retry looked the first send up


async def test_a_branch_follows_what_the_person_did_since_entering(drip: Drip) -> None:
    came = await drip.person(LA_PERSON, subscribed=False)
    missed = await drip.person(BERLIN_PERSON, subscribed=False)
    for person in (came, missed):
        await drip.event(person, "webinar_registered")
    await drip.run_due()
    await drip.event(came, "webinar_attended")
    await drip.at(drip.clock.now() + timedelta(days=1))
    assert drip.sent_to(LA_PERSON) == ["Thanks for coming."]
    assert drip.sent_to(BERLIN_PERSON) == ["Sorry we missed you."]
    outcomes = [(w.step, w.outcome, w.outcome_detail) for w in await drip.work(came)][1:]
    assert outcomes[0] == ("did-they-come", "branched", "to thanks")
    for person in (came, missed):
        [enrolment] = await drip.enrolments(person)
        assert enrolment.status == "completed"


async def test_a_reply_ends_the_sequence_before_its_next_step(drip: Drip) -> None:
    person = await drip.person(LA_PERSON)
    await drip.event(person, "trial_started")
    await drip.run_due()
    await drip.texted(LA_PERSON, "Is there a mobile app?")
    before = len(drip.sent_to(LA_PERSON))
    await drip.at(utc(2026, 3, 3, 18))
    assert len(drip.sent_to(LA_PERSON)) == before
    [enrolment] = await drip.enrolments(person)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "replied")


async def test_the_frequency_cap_holds_a_second_marketing_text_for_a_day(drip: Drip) -> None:
    person = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    await drip.event(person, "coupon_requested")  # 10:30 in Berlin: sent at once
    await drip.run_due()
    sent_at = drip.clock.now()
    await drip.at(sent_at + timedelta(hours=3))
    await drip.event(person, "tips_requested")  # another marketing sequence
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[1:] == [f"Your coupon is SPRING10. {STOP}"]
    [capped] = [w for w in await drip.work(person) if w.step == "tip"]
    assert (capped.outcome_detail, capped.due_at) == (
        "frequency cap",
        sent_at + timedelta(days=1, minutes=1),
    )
    await drip.at(sent_at + timedelta(days=1, minutes=1))
    assert drip.sent_to(BERLIN_PERSON)[1:] == [
        f"Your coupon is SPRING10. {STOP}", f"A tip for you. {STOP}",
    ]  # fmt: skip


async def test_two_marketing_texts_due_in_one_batch_obey_the_cap_together(drip: Drip) -> None:
    person = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    await drip.event(person, "coupon_requested")
    await drip.event(person, "tips_requested")
    assert await drip.worker.tick() == 2  # both steps, decided together
    assert drip.sent_to(BERLIN_PERSON)[1:] == [f"Your coupon is SPRING10. {STOP}"]
    [capped] = [w for w in await drip.work(person) if w.step == "tip"]
    assert capped.outcome_detail == "frequency cap"
    assert capped.due_at == drip.clock.now() + timedelta(days=1, minutes=1)


async def test_two_sequences_and_an_api_send_to_one_person_obey_one_cap(
    start_texting: StartTexting, clock: FixedClock, data_dir: Path
) -> None:
    """The business allows two marketing messages a day (and ten a week). An API send, a coupon
    sequence, a tips sequence and a second API send to one person: the first two go,
    the others wait their turn, and no 24 hours ever hold more than two."""
    business = data_dir / "business.yml"
    business.write_text(
        business.read_text().split("follow_ups:")[0]
        + "follow_ups:\n  caps: {per_24h: 2, per_7d: 10}\n"
    )
    drip = Drip(await start_texting(data_dir=data_dir, scheduler_enabled=False), clock)
    person = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    start = drip.clock.now()  # 10:30 in Berlin
    offer = {"to": BERLIN_PERSON, "purpose": "marketing"}
    await drip.api.post("/api/v1/messages", {**offer, "body": "API one."}, expect=201)
    await drip.at(start + timedelta(hours=1))
    await drip.event(person, "coupon_requested")
    await drip.run_due()
    await drip.at(start + timedelta(hours=2))
    await drip.event(person, "tips_requested")
    await drip.run_due()
    [capped] = [w for w in await drip.work(person) if w.step == "tip"]
    assert capped.outcome_detail == "frequency cap"
    await drip.at(start + timedelta(hours=3))
    held = await drip.api.post("/api/v1/messages", {**offer, "body": "API two."}, expect=202)
    assert held["held"]["reason"] == "frequency-cap"

    for hours in range(4, 60):
        await drip.at(start + timedelta(hours=hours))
        await drip.worker.release_held()
    assert drip.sent_to(BERLIN_PERSON)[1:] == [
        "API one.", f"Your coupon is SPRING10. {STOP}", f"A tip for you. {STOP}", "API two.",
    ]  # fmt: skip
    async with drip.app[SESSIONS]() as session:
        times = sorted(
            await session.scalars(
                select(Message.created_at).where(
                    Message.to_address == BERLIN_PERSON, Message.purpose == "marketing"
                )
            )
        )
    assert len(times) == 4
    assert all(
        later - earlier >= timedelta(days=1)
        for earlier, later in zip(times, times[2:], strict=False)
    )


async def test_a_sequence_cannot_loosen_the_business_cap(
    start_texting: StartTexting, clock: FixedClock, data_dir: Path
) -> None:
    """`caps: {per_24h: 3}` in a sequence, one a day for the business: one a day."""
    (data_dir / "sequences" / "tips.yml").write_text(
        SEQUENCES_UNDER_TEST["tips"].replace("steps:", "caps: {per_24h: 3}\nsteps:", 1)
    )
    drip = Drip(await start_texting(data_dir=data_dir, scheduler_enabled=False), clock)
    person = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    await drip.event(person, "coupon_requested")
    await drip.run_due()
    await drip.event(person, "tips_requested")
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[1:] == [f"Your coupon is SPRING10. {STOP}"]
    [capped] = [w for w in await drip.work(person) if w.step == "tip"]
    assert capped.outcome_detail == "frequency cap"


async def test_one_batch_texts_everyone_it_may_and_only_them(drip: Drip) -> None:
    numbers = [f"+4915112345{n:03d}" for n in range(6)]
    people = [
        await drip.person(number, subscribed=n != 2, timezone="Europe/Berlin")
        for n, number in enumerate(numbers)
    ]
    for person in people:
        await drip.event(person, "coupon_requested")
    assert await drip.worker.tick() == 6
    for n, number in enumerate(numbers):
        if n == 2:  # no SMS marketing consent: nothing, not even the request for it
            assert drip.sent_to(number) == []
        else:
            assert drip.sent_to(number)[1:] == [f"Your coupon is SPRING10. {STOP}"]
    outcomes = [w.outcome for p in people for w in await drip.work(p)]
    assert outcomes == ["sent", "sent", "skipped_consent", "sent", "sent", "sent"]


async def test_a_step_that_fails_does_not_hold_back_the_others_in_its_batch(
    drip: Drip, monkeypatch: pytest.MonkeyPatch
) -> None:
    numbers = [f"+4915112345{n:03d}" for n in range(3)]
    people = [await drip.person(n, timezone="Europe/Berlin") for n in numbers]
    for person in people:
        await drip.event(person, "coupon_requested")
    [bad] = await drip.work(people[1])
    decide = Decider.decide

    async def failing(self: Decider, session: Any, work: SequenceWork, *args: Any) -> Any:
        if work.id == bad.id:
            raise RuntimeError("a step that cannot be decided")
        return await decide(self, session, work, *args)

    monkeypatch.setattr(Decider, "decide", failing)
    assert await drip.worker.tick() == 3
    assert [len(drip.sent_to(n)[1:]) for n in numbers] == [1, 0, 1]
    [still] = await drip.work(people[1])
    assert (still.done_at, still.lease_owner) == (None, drip.worker.owner)


async def test_the_business_sets_the_caps_and_quiet_hours_every_sequence_starts_from(
    start_texting: StartTexting, clock: FixedClock, data_dir: Path
) -> None:
    business = data_dir / "business.yml"
    text = business.read_text().split("follow_ups:")[0]
    business.write_text(
        text + 'follow_ups:\n  quiet_hours: {from: "22:30", until: "07:00"}\n'
        "  caps: {per_24h: 2, per_7d: 5}\n"
    )
    drip = Drip(await start_texting(data_dir=data_dir, scheduler_enabled=False), clock)
    person = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    await drip.at(utc(2026, 3, 2, 21, 45))  # 22:45 in Berlin: quiet from 22:30
    await drip.event(person, "coupon_requested")
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[1:] == []
    await drip.at(utc(2026, 3, 3, 6))  # 07:00 in Berlin
    await drip.event(person, "tips_requested")  # a second marketing text: the cap is 2
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[1:] == [
        f"Your coupon is SPRING10. {STOP}", f"A tip for you. {STOP}",
    ]  # fmt: skip


# ------------------------------------------------------------------ the conversation


@dataclass
class RasaEvents:
    """Rasa's `POST /conversations/{id}/tracker/events` and the bot's batch of them
    (channels.conversation_batch): what was appended, and how many texts the emulator
    had taken at that moment."""

    twilio: TwilioEmulator | None = None
    appended: list[tuple[str, list[dict[str, Any]], int]] = field(default_factory=list)
    pushed_to: list[str | None] = field(default_factory=list)  # each append's output_channel
    status: int = 200
    failing: set[str] = field(default_factory=set)  # conversations a batch cannot append to

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/conversations/{id}/tracker/events", self.append)
        app.router.add_post("/webhooks/conversations/append", self.append_batch)
        return app

    async def append_batch(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            return web.json_response({"title": "no token"}, status=401)
        if self.status >= 300:
            return web.json_response({"title": "unavailable"}, status=self.status)
        sent = len(self.twilio.messages) if self.twilio else 0
        batch = (await request.json())["conversations"]
        appended, failed = [], []
        for item in batch:
            if item["conversation_id"] in self.failing:
                failed.append({"conversation_id": item["conversation_id"], "error": "no"})
                continue
            self.appended.append((item["conversation_id"], item["events"], sent))
            self.pushed_to.append(None)
            appended.append(item["conversation_id"])
        return web.json_response({"appended": appended, "failed": failed})

    async def append(self, request: web.Request) -> web.Response:
        if request.query.get("token") != RASA_TOKEN:
            return web.json_response({"message": "no token"}, status=401)
        if self.status >= 300:
            return web.json_response({"message": "unavailable"}, status=self.status)
        sent = len(self.twilio.messages) if self.twilio else 0
        self.appended.append((request.match_info["id"], await request.json(), sent))
        self.pushed_to.append(request.query.get("output_channel"))
        return web.json_response({})


RASA_TOKEN = "scheduler-test-rasa-token"


@pytest.fixture
async def talking(
    start_texting: StartTexting,
    clock: FixedClock,
    data_dir: Path,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> tuple[Drip, RasaEvents]:
    rasa = RasaEvents()
    server = await aiohttp_server(rasa.app())
    backend = await start_texting(
        data_dir=data_dir, scheduler_enabled=False,
        rasa_api_url=str(server.make_url("")).rstrip("/"), rasa_token=SecretStr(RASA_TOKEN),
    )  # fmt: skip
    rasa.twilio = backend.twilio
    return Drip(backend, clock), rasa


async def test_a_follow_up_is_in_the_conversation_before_it_is_sent(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "pricing_viewed")
    await drip.run_due()

    [(conversation, events, texts_sent_before)] = rasa.appended
    assert conversation == LA_PERSON and texts_sent_before == 0
    assert [(e["event"], e.get("name")) for e in events] == [
        ("action", "action_follow_up"), ("bot", None), ("slot", "follow_up"),
        ("action", "action_listen"),
    ]  # fmt: skip
    assert events[1]["text"] == "Want a walkthrough? Reply YES."
    assert events[2]["value"] == "demo"
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]


async def test_a_follow_up_rasa_could_not_record_waits_and_is_sent_once_it_can(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    rasa.status = 503
    await drip.event(person, "pricing_viewed")
    await drip.run_due()
    assert drip.sent_to(LA_PERSON) == []

    rasa.status = 200
    await drip.at(drip.clock.now() + timedelta(seconds=60))
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]
    assert [(w.attempt, w.outcome) for w in await drip.work(person)] == [
        (1, "retry"), (2, "sent"),
    ]  # fmt: skip


async def test_a_follow_up_whose_worker_died_before_recording_it_is_recorded_then_sent(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "pricing_viewed")
    crashed, rescuer = drip.other_worker("crashed"), drip.other_worker("rescuer")
    [work_id] = await crashed.claim()
    async with drip.app[SESSIONS].begin() as session:
        await crashed._decide_all(session, [work_id])  # …and it dies before recording
    drip.clock.advance(timedelta(minutes=2))
    assert await rescuer.tick() == 1
    [(conversation, _, texts_sent_before)] = rasa.appended
    assert (conversation, texts_sent_before) == (LA_PERSON, 0)
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]


async def test_a_follow_up_retried_after_an_unknown_outcome_is_not_recorded_twice(
    talking: tuple[Drip, RasaEvents], monkeypatch: pytest.MonkeyPatch
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "pricing_viewed")
    with twilio_unreachable(drip, monkeypatch):
        await drip.run_due()
    await drip.at(drip.clock.now() + timedelta(seconds=60))
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]
    assert [conversation for conversation, _, _ in rasa.appended] == [LA_PERSON]


async def test_a_follow_up_held_back_by_a_busy_sending_number_is_recorded_once(
    talking: tuple[Drip, RasaEvents],
) -> None:
    """The number has an hour of texts queued: the follow-up, already in the
    conversation, waits; when it goes, the conversation does not show it twice."""
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    door = drip.worker.door
    assert door is not None
    async with drip.app[SESSIONS].begin() as session:
        busy_until = drip.clock.now() + timedelta(hours=1)
        session.add(SenderPace(sender=door.sender, next_free_at=busy_until))
    await drip.event(person, "pricing_viewed")
    await drip.run_due()
    assert drip.sent_to(LA_PERSON) == []
    [(conversation, _, _)] = rasa.appended
    assert conversation == LA_PERSON

    await drip.at(drip.clock.now() + timedelta(hours=2))
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]
    assert [c for c, _, _ in rasa.appended] == [LA_PERSON]
    [busy, sent, *_] = await drip.work(person)
    assert (busy.attempt, busy.outcome) == (1, "retry")
    assert busy.outcome_detail is not None and "sender-busy" in busy.outcome_detail
    assert (sent.attempt, sent.outcome) == (2, "sent")


async def test_only_the_follow_up_rasa_could_not_record_in_a_batch_waits(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    other = "+14155552672"
    people = [await drip.person(number, subscribed=False) for number in (LA_PERSON, other)]
    rasa.failing = {other}
    for person in people:
        await drip.event(person, "pricing_viewed")
    assert await drip.worker.tick() == 2  # one batch, one request to Rasa
    assert drip.sent_to(LA_PERSON) == ["Want a walkthrough? Reply YES."]
    assert drip.sent_to(other) == []
    [first, again] = await drip.work(people[1])
    assert (first.outcome, first.outcome_detail) == (
        "retry", "Rasa could not record it in the conversation",
    )  # fmt: skip
    assert (again.attempt, again.done_at) == (2, None)


async def test_an_update_adds_points_and_a_handoff_step_gives_the_person_to_an_agent(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    before = (await drip.api.get(f"/api/v1/profiles/{person}/score"))["score"]
    await drip.event(person, "demo_requested")
    await drip.run_due()

    score = await drip.api.get(f"/api/v1/profiles/{person}/score")
    assert score["score"] == pytest.approx(before + 15)
    assert "sequence:handover" in [r["rule"] for r in score["reasons"]]
    [handoff] = (await drip.api.get("/api/v1/handoffs?status=open"))["items"]
    assert (handoff["conversation_id"], handoff["reason"]) == (LA_PERSON, "follow_up")
    assert handoff["note"] == "Asked for a demo twice; call them today."
    [enrolment] = await drip.enrolments(person)
    assert (enrolment.status, enrolment.exit_reason) == ("exited", "handed_off")
    # The bot stays quiet in that conversation while the agent has it.
    assert [(c, [e["event"] for e in events]) for c, events, _ in rasa.appended] == [
        (LA_PERSON, ["pause"])
    ]


async def test_a_web_follow_up_goes_into_the_persons_web_chat(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.web_visitor("chat-7f3a")
    await drip.event(person, "cart_left")
    await drip.run_due()

    [(conversation, events, _)] = rasa.appended
    assert conversation == "chat-7f3a" and rasa.pushed_to == ["webchat"]
    assert [e["text"] for e in events if e["event"] == "bot"] == ["Your cart is waiting."]
    assert drip.sent_to(LA_PERSON) == []
    listed = (await drip.api.get(f"/api/v1/profiles/{person}/messages"))["items"]
    assert [(m["channel"], m["body"], m["status"]) for m in listed] == [
        ("web", "Your cart is waiting.", "sent")
    ]


async def test_the_web_door_holds_marketing_at_night_and_signs_what_it_pushes(
    talking: tuple[Drip, RasaEvents],
) -> None:
    """A marketing push into a web chat: consent on the web, quiet hours in the
    person's time zone, and the door's signature the web chat channel checks."""
    drip, rasa = talking
    person = await drip.web_visitor("chat-7f3a")
    door = drip.app[WEB_DOOR]
    offer = WebPush(to="chat-7f3a", body="Spring sale: 20% off!", purpose=MessagePurpose.MARKETING)
    with pytest.raises(SendRefused) as refused:
        await door.push(offer)
    assert refused.value.kind == "consent-refused"
    await drip.api.post(
        f"/api/v1/profiles/{person}/consent",
        {"channel": "web", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )
    await drip.at(utc(2026, 3, 3, 7))  # 23:00 in San Francisco
    held = await door.push(offer)
    assert isinstance(held, Held) and held.message.reason == "quiet-hours"
    assert rasa.appended == []

    await drip.at(utc(2026, 3, 3, 16))  # 08:00 there
    assert await drip.worker.release_held() == 1
    [(conversation, events, _)] = rasa.appended
    assert (conversation, rasa.pushed_to) == ("chat-7f3a", ["webchat"])
    [bot] = [e for e in events if e["event"] == "bot"]
    secret = signing_secret(drip.backend.settings)
    signature = bot["metadata"][door_signature.METADATA_KEY]
    assert door_signature.is_signed(secret, "chat-7f3a", "Spring sale: 20% off!", signature)
    assert not door_signature.is_signed(secret, "chat-other", "Spring sale: 20% off!", signature)


async def test_the_messages_api_sends_into_a_web_chat_through_the_web_door(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    await drip.web_visitor("chat-7f3a")
    note = {"channel": "web", "to": "chat-7f3a", "body": "Your demo is at 3pm.",
            "purpose": "transactional", "send_key": "demo-note-1"}  # fmt: skip
    sent = await drip.api.post("/api/v1/messages", note, expect=201)
    [message] = sent["messages"]
    assert (message["channel"], message["to_address"], message["status"]) == (
        "web", "chat-7f3a", "sent",
    )  # fmt: skip
    assert rasa.pushed_to == ["webchat"]
    await drip.api.post("/api/v1/messages", note, expect=200)  # the same key: once
    assert len(rasa.appended) == 1
    offer = {**note, "body": "20% off!", "purpose": "marketing", "send_key": None}
    refused = await drip.api.post("/api/v1/messages", offer, expect=409)
    assert refused["type"] == "urn:parley:problem:consent-refused"
    for wrong in ({"purpose": "conversational"}, {"media_urls": ["https://x.example/a.png"]},
                  {"to": "chat 7f3a"}):  # fmt: skip
        await drip.api.post("/api/v1/messages", {**note, **wrong}, expect=422)
    assert len(rasa.appended) == 1


async def test_best_picks_the_channel_the_person_agreed_to_last(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    by_text = await drip.person(BERLIN_PERSON, timezone="Europe/Berlin")
    await drip.event(by_text, "price_dropped")
    await drip.run_due()
    assert drip.sent_to(BERLIN_PERSON)[-1] == "Prices dropped 10%. Reply STOP to opt out."

    on_the_web = await drip.person("+4915112345679", timezone="Europe/Berlin")
    await drip.api.post(
        f"/api/v1/profiles/{on_the_web}/identities", {"kind": "web", "address": "chat-9b1c"},
        expect=None,
    )  # fmt: skip
    drip.clock.advance(timedelta(minutes=5))
    await drip.api.post(
        f"/api/v1/profiles/{on_the_web}/consent",
        {"channel": "web", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": "Tips and offers in this chat?", "reply": "yes please"},
        expect=201,
    )  # fmt: skip
    await drip.event(on_the_web, "price_dropped")
    await drip.run_due()
    assert "Prices dropped 10%. Reply STOP to opt out." not in drip.sent_to("+4915112345679")
    assert rasa.pushed_to[-1] == "webchat" and rasa.appended[-1][0] == "chat-9b1c"


async def test_a_voice_follow_up_is_a_call_that_speaks_it_in_the_same_conversation(
    talking: tuple[Drip, RasaEvents],
) -> None:
    drip, rasa = talking
    person = await drip.person(LA_PERSON, subscribed=False)
    await drip.event(person, "callback_requested")
    await drip.run_due()

    spoken = "Hi, it's Brightdesk. Would you like a demo this week?"
    [(conversation, events, _)] = rasa.appended
    assert conversation == LA_PERSON
    assert [e.get("value") for e in events if e["event"] == "slot"] == ["demo"]
    [call] = drip.twilio.calls.values()
    assert (call.direction, call.to) == ("outbound-api", LA_PERSON)
    await drip.backend.settle()
    assert call.transcript[0]["text"] == spoken
    listed = (await drip.api.get(f"/api/v1/profiles/{person}/messages"))["items"]
    assert [(m["channel"], m["body"]) for m in listed] == [("voice", spoken)]
    [step] = await drip.work(person)
    assert step.outcome == "sent"


async def test_a_sequence_on_hold_sends_nothing_until_resumed(
    drip: Drip, issue_token: IssueToken
) -> None:
    marketer = Api(drip.backend.client, await issue_token(Role.MARKETER))
    person = await drip.person(LA_PERSON, first_name="Ada")
    await drip.event(person, "trial_started")
    await drip.run_due()
    held = await marketer.post("/api/v1/sequences/nurture/hold", {})
    assert (held["on_hold"], held["paused"]) == (True, False)
    listed = await marketer.get("/api/v1/sequences")
    assert {s["id"]: s["on_hold"] for s in listed["items"]}["nurture"] is True
    await drip.api.post("/api/v1/sequences/nurture/resume", {}, expect=403)  # service

    await drip.at(utc(2026, 3, 3, 18, 0))  # the tip's time: it waits
    assert drip.sent_to(LA_PERSON)[1:] == []
    # Someone new still enters while it is on hold.
    other = await drip.person("+14155550199", first_name="Bo")
    await drip.event(other, "trial_started")
    assert [e.status for e in await drip.enrolments(other)] == ["active"]

    resumed = await marketer.post("/api/v1/sequences/nurture/resume", {})
    assert resumed["on_hold"] is False
    await drip.run_due()
    assert drip.sent_to(LA_PERSON)[1:] == [f"Hi Ada, day two of your trial. {STOP}"]
    audit = await Api(drip.backend.client, await issue_token(Role.ADMIN)).get("/api/v1/audit")
    actions = [e["action"] for e in audit["items"] if e["action"].endswith("_sequence")]
    assert actions == ["resume_sequence", "hold_sequence"]
