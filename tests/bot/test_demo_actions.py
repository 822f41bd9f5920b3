"""Demo booking: free times offered in business hours (never too soon) and labelled in the
person's time zone; the time they choose understood in that zone; booking, moving, a slot
taken meanwhile, and cancelling. Brightdesk opens 09:00-17:00 Monday to Thursday and
09:00-15:00 on Friday, America/Los_Angeles; demos last 30 minutes."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.demo import (
    ActionBookDemo,
    ActionCancelDemo,
    ActionOfferDemo,
    ActionPickDemoTime,
    ordinal_in,
)
from actions.demo_times import (
    LEAD_TIME,
    Period,
    Wanted,
    candidates,
    choose,
    offer,
    offer_for,
    period_in,
    understand,
)
from bot.backend_client import BackendRejected
from bot.business import Business, load_business
from tests.bot.fakes import FakeBackend, conversation, fixed_clock, slots_of

UTC = timezone.utc
LA = ZoneInfo("America/Los_Angeles")
NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
SENDER = "web-demo-1"

# Monday 10 March 2025, 09:00 in Los Angeles (PDT since the day before).
MONDAY_9AM = datetime(2025, 3, 10, 16, 0, tzinfo=UTC)
TUESDAY_9AM = datetime(2025, 3, 11, 16, 0, tzinfo=UTC)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 3, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def business() -> Business:
    return load_business()


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def person(fake: FakeBackend, zone: str | None = None) -> str:
    return fake.add_person("web", SENDER, {"timezone": zone} if zone else {})


async def offered(
    fake: FakeBackend,
    now: datetime,
    intent: str = "book_demo",
    slots: dict[str, Any] | None = None,
) -> dict[str, Any]:
    action = ActionOfferDemo(fake, clock=fixed_clock(now), business=load_business())
    tracker = conversation(SENDER, "can I see a demo?", intent, slots=slots)
    return slots_of(await action.run(CollectingDispatcher(), tracker, {}))


async def picked(
    fake: FakeBackend, text: str, now: datetime = MONDAY_9AM, slots: dict[str, Any] | None = None
) -> dict[str, Any]:
    action = ActionPickDemoTime(fake, clock=fixed_clock(now), business=load_business())
    tracker = conversation(SENDER, text, "choose_time", slots=slots)
    return slots_of(await action.run(CollectingDispatcher(), tracker, {}))


async def booked(fake: FakeBackend, slots: dict[str, Any]) -> list[Any]:
    action = ActionBookDemo(fake, clock=fixed_clock(MONDAY_9AM), business=load_business())
    tracker = conversation(SENDER, "yes", "affirm", slots=slots)
    events: list[Any] = await action.run(CollectingDispatcher(), tracker, {})
    return events


def offered_times(slots: dict[str, Any]) -> list[datetime]:
    return [
        datetime.fromisoformat(slots[f"demo_slot_{i}"])
        for i in range(1, 5)
        if slots[f"demo_slot_{i}"]
    ]


# -- offering ----------------------------------------------------------------------------


async def test_four_times_are_offered_the_first_free_one_on_each_open_day(
    fake: FakeBackend,
) -> None:
    profile_id = person(fake)
    slots = await offered(fake, MONDAY_9AM)
    assert slots["demo_offer_count"] == "4"
    assert offered_times(slots) == [utc(10, 18), utc(11, 16), utc(12, 16), utc(13, 16)]
    assert [slots[f"demo_label_{i}"] for i in range(1, 5)] == [
        "Mon 10 Mar, 11:00 PDT",
        "Tue 11 Mar, 09:00 PDT",
        "Wed 12 Mar, 09:00 PDT",
        "Thu 13 Mar, 09:00 PDT",
    ]
    assert slots["demo_zone"] == "times in PDT, Los Angeles"
    assert slots["demo_minutes"] == "30"
    assert slots["demo_mode"] == "book"
    assert slots["demo_id"] is None
    assert slots["profile_id"] == profile_id


async def test_the_times_are_labelled_in_the_persons_own_time_zone(fake: FakeBackend) -> None:
    person(fake, "Europe/Berlin")
    slots = await offered(fake, MONDAY_9AM)
    # The same business-hours instants, in Berlin's words.
    assert offered_times(slots) == [utc(10, 18), utc(11, 16), utc(12, 16), utc(13, 16)]
    assert slots["demo_label_1"] == "Mon 10 Mar, 19:00 CET"
    assert slots["demo_label_2"] == "Tue 11 Mar, 17:00 CET"
    assert slots["demo_zone"] == "times in CET, Berlin"


async def test_a_person_with_an_unknown_time_zone_sees_the_business_zone(
    fake: FakeBackend,
) -> None:
    person(fake, "Mars/Olympus_Mons")
    slots = await offered(fake, MONDAY_9AM)
    assert slots["demo_label_1"] == "Mon 10 Mar, 11:00 PDT"
    assert slots["demo_zone"] == "times in PDT, Los Angeles"


async def test_nothing_is_offered_that_starts_within_two_hours(fake: FakeBackend) -> None:
    person(fake)
    ten_fifteen = utc(10, 17, 15)
    slots = await offered(fake, ten_fifteen)
    first = datetime.fromisoformat(slots["demo_slot_1"])
    assert first == utc(10, 19, 30)  # 12:30 PDT: 11:30, 12:00 are too soon
    assert slots["demo_label_1"] == "Mon 10 Mar, 12:30 PDT"
    assert all(t >= ten_fifteen + timedelta(hours=2) for t in offered_times(slots))


async def test_on_friday_afternoon_the_weekend_is_skipped(fake: FakeBackend) -> None:
    person(fake)
    friday_2pm = utc(14, 21)  # Friday closes at 15:00: 16:00 is past the last start
    slots = await offered(fake, friday_2pm)
    assert [slots[f"demo_label_{i}"] for i in range(1, 5)] == [
        "Mon 17 Mar, 09:00 PDT",
        "Tue 18 Mar, 09:00 PDT",
        "Wed 19 Mar, 09:00 PDT",
        "Thu 20 Mar, 09:00 PDT",
    ]


async def test_a_time_someone_else_booked_is_not_offered(fake: FakeBackend) -> None:
    person(fake)
    fake.book(fake.add_person("web", "someone-else"), utc(11, 16))
    slots = await offered(fake, MONDAY_9AM)
    assert utc(11, 16) not in offered_times(slots)
    assert slots["demo_label_2"] == "Tue 11 Mar, 09:30 PDT"


async def test_a_person_with_a_demo_asking_to_reschedule_moves_it(fake: FakeBackend) -> None:
    demo_id = fake.book(person(fake), utc(13, 16))
    slots = await offered(fake, MONDAY_9AM, intent="reschedule_demo")
    assert slots["demo_mode"] == "reschedule"
    assert slots["demo_id"] == demo_id
    assert slots["demo_offer_count"] == "4"


async def test_a_person_with_a_demo_asking_for_a_demo_books_one(fake: FakeBackend) -> None:
    fake.book(person(fake), utc(13, 16))
    slots = await offered(fake, MONDAY_9AM, intent="book_demo")
    assert slots["demo_mode"] == "book"
    assert slots["demo_id"] is None


async def test_times_offered_again_in_the_same_booking_keep_booking(fake: FakeBackend) -> None:
    # Someone with a demo asked to book another; the time they chose went to someone
    # else, so the bot offers other times (rule: action_book_demo -> taken ->
    # action_offer_demo, with the person's last intent still "affirm"). This is still
    # booking, not moving the demo they already have.
    fake.book(person(fake), utc(13, 16))
    slots = await offered(fake, MONDAY_9AM, intent="affirm", slots={"demo_mode": "book"})
    assert slots["demo_mode"] == "book"
    assert slots["demo_id"] is None


async def test_times_offered_again_while_moving_keep_moving(fake: FakeBackend) -> None:
    demo_id = fake.book(person(fake), utc(13, 16))
    slots = await offered(
        fake, MONDAY_9AM, intent="deny", slots={"demo_mode": "reschedule", "demo_id": demo_id}
    )
    assert slots["demo_mode"] == "reschedule"
    assert slots["demo_id"] == demo_id


async def test_offering_when_the_backend_is_down_offers_nothing_politely(
    fake: FakeBackend,
) -> None:
    fake.down = True
    slots = await offered(fake, MONDAY_9AM, slots={"profile_id": "profile-9"})
    assert slots["demo_offer_count"] == "0"
    assert all(slots[f"demo_slot_{i}"] is None for i in range(1, 5))
    assert all(slots[f"demo_label_{i}"] is None for i in range(1, 5))
    assert slots["profile_id"] == "profile-9"
    assert slots["demo_mode"] == "book"
    assert slots["demo_zone"] == "times in PDT, Los Angeles"


def test_every_offer_over_two_weeks_is_in_business_hours_and_not_too_soon(
    business: Business,
) -> None:
    now = datetime(2025, 3, 3, 0, 0, tzinfo=UTC)  # across the start of summer time
    while now < datetime(2025, 3, 17, tzinfo=UTC):
        slots = offer(business, now, set(), 4)
        assert len(slots) == 4, now
        days = [s.starts_at.astimezone(LA).date() for s in slots]
        assert days == sorted(set(days)), f"{now}: one time per day, in order"
        for slot in slots:
            local = slot.starts_at.astimezone(LA)
            hours = business.hours_on(local.weekday())
            assert hours is not None, f"{now}: {local} is on a closed day"
            assert hours[0] <= local.time(), f"{now}: {local} is before opening"
            assert (local + timedelta(minutes=30)).time() <= hours[1], f"{now}: {local} runs late"
            assert slot.starts_at >= now + LEAD_TIME, f"{now}: {local} is too soon"
            assert local.minute in (0, 30)
        now += timedelta(hours=5, minutes=10)


def test_candidates_end_so_that_the_demo_ends_at_closing(business: Business) -> None:
    friday = [
        s.starts_at.astimezone(LA).time()
        for s in candidates(business, utc(14, 7), days=1)  # Friday 00:00 PDT
    ]
    assert friday[0] == time(9, 0)
    assert friday[-1] == time(14, 30)


# -- understanding a chosen time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "now", "zone", "expected"),
    [
        ("tomorrow at 3pm", MONDAY_9AM, LA, datetime(2025, 3, 11, 15, 0)),
        ("tomorrow at 3pm", MONDAY_9AM, BERLIN, datetime(2025, 3, 11, 15, 0)),
        ("next Tuesday morning", MONDAY_9AM, LA, datetime(2025, 3, 11, 10, 0)),
        ("next Tuesday morning", TUESDAY_9AM, LA, datetime(2025, 3, 18, 10, 0)),
        ("tomorrow afternoon", MONDAY_9AM, NEW_YORK, datetime(2025, 3, 11, 14, 0)),
        ("friday at 2:30pm", MONDAY_9AM, LA, datetime(2025, 3, 14, 14, 30)),
        ("thursday at 11", MONDAY_9AM, LA, datetime(2025, 3, 13, 11, 0)),
    ],
)
def test_understand_reads_a_moment_in_the_persons_zone(
    text: str, now: datetime, zone: ZoneInfo, expected: datetime
) -> None:
    wanted = understand(text, now, zone)
    assert wanted is not None and wanted.day is None and wanted.at is not None
    assert wanted.at.astimezone(zone).replace(tzinfo=None) == expected
    assert wanted.at.astimezone(UTC) == expected.replace(tzinfo=zone).astimezone(UTC)


def test_tomorrow_is_tomorrow_where_the_person_is() -> None:
    # Monday 17:30 in Los Angeles is already Tuesday 01:30 in Berlin.
    now = utc(11, 0, 30)
    berlin = understand("tomorrow", now, BERLIN)
    los_angeles = understand("tomorrow", now, LA)
    assert berlin == Wanted(at=None, day=datetime(2025, 3, 12).date())
    assert los_angeles == Wanted(at=None, day=datetime(2025, 3, 11).date())


def test_understand_gives_up_on_words_that_are_no_time() -> None:
    assert understand("banana", MONDAY_9AM, LA) is None


def test_choose_takes_the_first_free_slot_on_a_named_day(business: Business) -> None:
    wednesday = Wanted(at=None, day=datetime(2025, 3, 12).date())
    slot = choose(wednesday, business, MONDAY_9AM, {utc(12, 16)}, LA)
    assert slot is not None and slot.starts_at == utc(12, 16, 30)


# -- picking a time ----------------------------------------------------------------------

OFFER = {
    "profile_id": None,
    "demo_offer_count": "3",
    "demo_slot_1": "2025-03-10T18:00:00+00:00",
    "demo_label_1": "Mon 10 Mar, 11:00 PDT",
    "demo_slot_2": "2025-03-11T16:00:00+00:00",
    "demo_label_2": "Tue 11 Mar, 09:00 PDT",
    "demo_slot_3": "2025-03-12T16:00:00+00:00",
    "demo_label_3": "Wed 12 Mar, 09:00 PDT",
}


async def test_a_button_picks_the_time_on_it_without_asking_the_backend(
    fake: FakeBackend,
) -> None:
    slots = await picked(fake, "Tue 11 Mar, 09:00 PDT", slots=OFFER)
    assert slots == {
        "demo_pick": "ok",
        "demo_time": "2025-03-11T16:00:00+00:00",
        "demo_time_label": "Tue 11 Mar, 09:00 PDT",
    }
    assert fake.calls == []


@pytest.mark.parametrize(
    ("text", "index"),
    [("the 2nd one", 2), ("second", 2), ("2", 2), ("number 1 please", 1), ("the last one", 3)],
)
async def test_a_time_is_picked_by_its_place_in_the_list(
    fake: FakeBackend, text: str, index: int
) -> None:
    slots = await picked(fake, text, slots=OFFER)
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time"] == OFFER[f"demo_slot_{index}"]
    assert slots["demo_time_label"] == OFFER[f"demo_label_{index}"]


def test_ordinal_in_knows_only_the_times_offered() -> None:
    assert ordinal_in("the fourth one", 3) is None
    assert ordinal_in("last", 0) is None
    assert ordinal_in("the third", 3) == 3
    assert ordinal_in("2pm", 4) is None
    assert ordinal_in("the second one is fine but", 4) is None


async def test_tomorrow_at_3pm_is_booked_in_the_persons_zone(fake: FakeBackend) -> None:
    person(fake)
    slots = await picked(fake, "tomorrow at 3pm")
    assert slots == {
        "demo_pick": "ok",
        "demo_time": "2025-03-11T22:00:00+00:00",
        "demo_time_label": "Tue 11 Mar, 15:00 PDT",
    }


async def test_tomorrow_at_3pm_in_new_york_is_noon_in_los_angeles(fake: FakeBackend) -> None:
    person(fake, "America/New_York")
    slots = await picked(fake, "tomorrow at 3pm")
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time"] == "2025-03-11T19:00:00+00:00"
    assert slots["demo_time_label"] == "Tue 11 Mar, 15:00 EDT"


async def test_next_tuesday_morning_said_on_a_tuesday_is_a_week_later(fake: FakeBackend) -> None:
    person(fake)
    slots = await picked(fake, "next Tuesday morning", now=TUESDAY_9AM)
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time"] == "2025-03-18T17:00:00+00:00"
    assert slots["demo_time_label"] == "Tue 18 Mar, 10:00 PDT"


async def test_tuesday_morning_in_new_york_is_before_opening_in_los_angeles(
    fake: FakeBackend,
) -> None:
    person(fake, "America/New_York")
    slots = await picked(fake, "next Tuesday morning")
    assert slots == {"demo_pick": "unavailable", "demo_time_label": "Tue 11 Mar, 10:00 EDT"}


async def test_tomorrow_means_the_persons_tomorrow(fake: FakeBackend) -> None:
    person(fake, "Europe/Berlin")
    monday_evening_in_la = utc(11, 0, 30)  # Tuesday 01:30 in Berlin
    slots = await picked(fake, "tomorrow at 6pm", now=monday_evening_in_la)
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time"] == "2025-03-12T17:00:00+00:00"  # Wednesday 10:00 PDT
    assert slots["demo_time_label"] == "Wed 12 Mar, 18:00 CET"


async def test_a_named_day_gets_its_first_free_time(fake: FakeBackend) -> None:
    person(fake)
    fake.book(fake.add_person("web", "someone-else"), utc(12, 16))
    slots = await picked(fake, "Wednesday")
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time_label"] == "Wed 12 Mar, 09:30 PDT"


async def test_a_time_within_two_hours_is_unavailable(fake: FakeBackend) -> None:
    person(fake)
    assert await picked(fake, "today at 10am") == {
        "demo_pick": "unavailable",
        "demo_time_label": "Mon 10 Mar, 10:00 PDT",
    }
    assert (await picked(fake, "today at 11am"))["demo_pick"] == "ok"


async def test_a_time_outside_business_hours_is_unavailable(fake: FakeBackend) -> None:
    person(fake)
    assert await picked(fake, "tomorrow at 8pm") == {
        "demo_pick": "unavailable",
        "demo_time_label": "Tue 11 Mar, 20:00 PDT",
    }
    assert await picked(fake, "Saturday") == {
        "demo_pick": "unavailable",
        "demo_time_label": "Saturday",
    }


async def test_a_time_someone_else_has_is_unavailable(fake: FakeBackend) -> None:
    person(fake)
    fake.book(fake.add_person("web", "someone-else"), utc(11, 22))
    slots = await picked(fake, "tomorrow at 3pm")
    assert slots == {"demo_pick": "unavailable", "demo_time_label": "Tue 11 Mar, 15:00 PDT"}


async def test_tomorrow_at_3_means_3pm_during_business_hours(fake: FakeBackend) -> None:
    # understand() turns "at 3" into "at 3:00", which dateparser reads as 03:00.
    person(fake)
    slots = await picked(fake, "tomorrow at 3")
    assert slots["demo_pick"] == "ok"
    assert slots["demo_time_label"] == "Tue 11 Mar, 15:00 PDT"


async def test_words_that_are_no_time_are_asked_again(fake: FakeBackend) -> None:
    person(fake)
    assert await picked(fake, "banana", slots=OFFER) == {"demo_pick": "unreadable"}
    assert await picked(fake, "the fourth one", slots=OFFER) == {"demo_pick": "unreadable"}


async def test_a_place_in_the_list_still_works_when_the_backend_is_down(
    fake: FakeBackend,
) -> None:
    fake.down = True
    assert (await picked(fake, "the first one", slots=OFFER))["demo_pick"] == "ok"
    assert await picked(fake, "tomorrow at 3pm", slots=OFFER) == {"demo_pick": "unreadable"}


# -- booking -----------------------------------------------------------------------------

CHOSEN = {"demo_time": "2025-03-11T22:00:00+00:00", "demo_mode": "book", "demo_id": None}


async def test_a_confirmed_time_is_booked_for_the_person(fake: FakeBackend) -> None:
    profile_id = person(fake)
    events = await booked(fake, {**CHOSEN, "profile_id": profile_id})
    [demo] = fake.live_demos()
    assert events == [SlotSet("demo_booking", "booked"), SlotSet("demo_id", demo.id)]
    assert fake.called("book_demo") == [
        {
            "profile_id": profile_id,
            "starts_at": utc(11, 22),
            "minutes": 30,
            "conversation_id": SENDER,
        }
    ]
    assert demo.profile_id == profile_id


async def test_someone_the_bot_has_not_met_yet_is_identified_to_book(fake: FakeBackend) -> None:
    events = await booked(fake, CHOSEN)
    assert slots_of(events)["demo_booking"] == "booked"
    profile = fake.profile_of("web", SENDER)
    assert profile is not None and fake.live_demos()[0].profile_id == profile.id


async def test_rescheduling_moves_the_demo_instead_of_booking_another(fake: FakeBackend) -> None:
    profile_id = person(fake)
    demo_id = fake.book(profile_id, utc(13, 16))
    events = await booked(
        fake, {**CHOSEN, "profile_id": profile_id, "demo_mode": "reschedule", "demo_id": demo_id}
    )
    assert events == [SlotSet("demo_booking", "booked"), SlotSet("demo_id", demo_id)]
    assert [(d.id, d.starts_at) for d in fake.live_demos()] == [(demo_id, utc(11, 22))]
    assert fake.called("book_demo") == []


async def test_a_time_taken_meanwhile_is_reported_and_other_times_are_offered(
    fake: FakeBackend,
) -> None:
    profile_id = person(fake)
    first_offer = await offered(fake, MONDAY_9AM)
    chosen = first_offer["demo_slot_2"]
    # Someone else books the same time between the offer and the person's "yes".
    fake.book(fake.add_person("web", "someone-else"), datetime.fromisoformat(chosen))
    events = await booked(fake, {**first_offer, "demo_time": chosen, "profile_id": profile_id})
    assert events == [SlotSet("demo_booking", "taken")]
    second_offer = await offered(fake, MONDAY_9AM, intent="affirm", slots=first_offer)
    assert chosen not in [second_offer[f"demo_slot_{i}"] for i in range(1, 5)]
    assert second_offer["demo_offer_count"] == "4"
    assert second_offer["demo_label_2"] == "Tue 11 Mar, 09:30 PDT"
    assert [d.profile_id for d in fake.live_demos()] != [profile_id]


async def test_a_409_from_the_backend_means_taken(fake: FakeBackend) -> None:
    fake.reject_bookings = BackendRejected(409, {"title": "slot taken", "status": 409})
    assert await booked(fake, {**CHOSEN, "profile_id": person(fake)}) == [
        SlotSet("demo_booking", "taken")
    ]


async def test_moving_to_a_time_someone_else_has_means_taken(fake: FakeBackend) -> None:
    profile_id = person(fake)
    demo_id = fake.book(profile_id, utc(13, 16))
    fake.book(fake.add_person("web", "someone-else"), utc(11, 22))
    events = await booked(
        fake, {**CHOSEN, "profile_id": profile_id, "demo_mode": "reschedule", "demo_id": demo_id}
    )
    assert events == [SlotSet("demo_booking", "taken")]
    assert fake.demos[demo_id].starts_at == utc(13, 16)


async def test_another_refusal_is_a_failure_not_taken(fake: FakeBackend) -> None:
    fake.reject_bookings = BackendRejected(422, {"title": "Invalid body", "status": 422})
    assert await booked(fake, {**CHOSEN, "profile_id": person(fake)}) == [
        SlotSet("demo_booking", "failed")
    ]


async def test_booking_when_the_backend_is_down_fails_politely(fake: FakeBackend) -> None:
    profile_id = person(fake)
    fake.down = True
    assert await booked(fake, {**CHOSEN, "profile_id": profile_id}) == [
        SlotSet("demo_booking", "failed")
    ]
    assert fake.live_demos() == []


# -- cancelling --------------------------------------------------------------------------


async def cancelled(fake: FakeBackend, slots: dict[str, Any] | None = None) -> list[Any]:
    action = ActionCancelDemo(fake, clock=fixed_clock(MONDAY_9AM), business=load_business())
    tracker = conversation(SENDER, "cancel my demo", "cancel_demo", slots=slots)
    events: list[Any] = await action.run(CollectingDispatcher(), tracker, {})
    return events


async def test_cancelling_cancels_the_persons_demo_only(fake: FakeBackend) -> None:
    profile_id = person(fake)
    mine = fake.book(profile_id, utc(13, 16))
    theirs = fake.book(fake.add_person("web", "someone-else"), utc(12, 16))
    events = await cancelled(fake, {"profile_id": profile_id, "demo_id": mine})
    assert events == [SlotSet("demo_cancel", "cancelled"), SlotSet("demo_id", None)]
    assert fake.demos[mine].status == "cancelled"
    assert fake.demos[theirs].status == "booked"


async def test_cancelling_without_a_demo_says_there_is_none(fake: FakeBackend) -> None:
    person(fake)
    fake.book(fake.add_person("web", "someone-else"), utc(12, 16))
    assert await cancelled(fake) == [SlotSet("demo_cancel", "none")]
    assert fake.called("cancel_demo") == []


async def test_cancelling_when_the_backend_is_down_fails_politely(fake: FakeBackend) -> None:
    demo_id = fake.book(person(fake), utc(13, 16))
    fake.down = True
    assert await cancelled(fake) == [SlotSet("demo_cancel", "failed")]
    assert fake.demos[demo_id].status == "booked"


# -- a stretch of time asked for ---------------------------------------------------------


def period(text: str, now: datetime = MONDAY_9AM, zone: ZoneInfo = LA) -> Period | None:
    return period_in(text, now, zone, 90)


@pytest.mark.parametrize(
    ("text", "first", "last", "words"),
    [
        (
            "can we do a demo next week?",
            date(2025, 3, 17),
            date(2025, 3, 23),
            "in the week of 17 Mar",
        ),
        ("book a demo for next month", date(2025, 4, 1), date(2025, 4, 30), "in April"),
        ("demo sometime in January", date(2026, 1, 1), date(2026, 1, 31), "in January 2026"),
        ("demo in may?", date(2025, 5, 1), date(2025, 5, 31), "in May"),
        (
            "early next week",
            date(2025, 3, 17),
            date(2025, 3, 19),
            "between Mon 17 Mar and Wed 19 Mar",
        ),
        (
            "end of next week",
            date(2025, 3, 20),
            date(2025, 3, 23),
            "between Thu 20 Mar and Sun 23 Mar",
        ),
        ("the week after next", date(2025, 3, 24), date(2025, 3, 30), "in the week of 24 Mar"),
        ("in two weeks", date(2025, 3, 24), date(2025, 3, 30), "in the week of 24 Mar"),
        (
            "later this month",
            date(2025, 3, 11),
            date(2025, 3, 31),
            "between Tue 11 Mar and Mon 31 Mar",
        ),
        ("mid april", date(2025, 4, 11), date(2025, 4, 20), "between Fri 11 Apr and Sun 20 Apr"),
        ("after the 20th", date(2025, 3, 21), date(2025, 6, 7), "from Fri 21 Mar"),
        (
            "I'm away until the 20th, after that?",
            date(2025, 3, 20),
            date(2025, 6, 7),
            "from Thu 20 Mar",
        ),
        (
            "before friday",
            date(2025, 3, 10),
            date(2025, 3, 13),
            "between Mon 10 Mar and Thu 13 Mar",
        ),
        ("the 1st of april", date(2025, 4, 1), date(2025, 4, 1), "on Tue 1 Apr"),
    ],
)
def test_a_stretch_of_days_is_read_in_the_persons_words(
    text: str, first: date, last: date, words: str
) -> None:
    assert period(text) == Period(first, last, None, words)


def test_a_part_of_a_day_limits_the_hours() -> None:
    assert period("a demo next Thursday afternoon") == Period(
        date(2025, 3, 13), date(2025, 3, 13), (time(12), time(17)), "on Thu 13 Mar in the afternoon"
    )
    mornings = period("mornings would be best")
    assert mornings is not None and mornings.hours == (time(0), time(12))
    assert (mornings.first, mornings.last) == (date(2025, 3, 10), date(2025, 6, 7))
    assert mornings.words == "in the morning"


def test_a_time_on_a_day_means_from_that_time_on() -> None:
    tomorrow = period("a demo tomorrow at 3pm")
    assert tomorrow is not None and tomorrow.words == "on Tue 11 Mar from 15:00"
    assert tomorrow.hours is not None and tomorrow.hours[0] == time(15)


def test_next_week_is_the_persons_next_week() -> None:
    # Sunday 16 March, 20:00 in Los Angeles is already Monday 17 March in Berlin.
    sunday_evening = utc(17, 3)
    assert period("next week", sunday_evening, LA) == Period(
        date(2025, 3, 17), date(2025, 3, 23), None, "in the week of 17 Mar"
    )
    assert period("next week", sunday_evening, BERLIN) == Period(
        date(2025, 3, 24), date(2025, 3, 30), None, "in the week of 24 Mar"
    )


@pytest.mark.parametrize(
    "text",
    ["book a demo", "can I see a demo?", "may I book a demo", "demo for 10 agents", "yes", "4pm"],
)
def test_words_naming_no_stretch_of_time_are_no_period(text: str) -> None:
    assert period(text) is None


async def offered_for(
    fake: FakeBackend, text: str, now: datetime = MONDAY_9AM, intent: str = "book_demo"
) -> dict[str, Any]:
    action = ActionOfferDemo(fake, clock=fixed_clock(now), business=load_business())
    tracker = conversation(SENDER, text, intent)
    return slots_of(await action.run(CollectingDispatcher(), tracker, {}))


def labels(slots: dict[str, Any]) -> list[str]:
    return [slots[f"demo_label_{i}"] for i in range(1, 5) if slots[f"demo_label_{i}"]]


async def test_a_demo_next_week_offers_times_next_week(fake: FakeBackend) -> None:
    person(fake)
    slots = await offered_for(fake, "can we do a demo next week?")
    assert labels(slots) == [
        "Mon 17 Mar, 09:00 PDT",
        "Tue 18 Mar, 09:00 PDT",
        "Wed 19 Mar, 09:00 PDT",
        "Thu 20 Mar, 09:00 PDT",
    ]
    assert slots["demo_offer_kind"] == "period"
    assert slots["demo_period"] == "in the week of 17 Mar"
    assert slots["demo_offer_count"] == "4"


async def test_a_demo_next_month_offers_times_next_month(fake: FakeBackend) -> None:
    person(fake)
    slots = await offered_for(fake, "book a demo for next month")
    assert labels(slots) == [
        "Tue 1 Apr, 09:00 PDT",
        "Wed 2 Apr, 09:00 PDT",
        "Thu 3 Apr, 09:00 PDT",
        "Fri 4 Apr, 09:00 PDT",
    ]
    assert slots["demo_period"] == "in April"


async def test_a_demo_in_a_named_month_offers_times_in_it(fake: FakeBackend) -> None:
    person(fake)
    december = datetime(2025, 12, 2, 18, 0, tzinfo=UTC)  # Tuesday 2 Dec, 10:00 PST
    slots = await offered_for(fake, "demo sometime in January", now=december)
    assert labels(slots)[0] == "Thu 1 Jan, 09:00 PST"  # the business is open on 1 January
    assert all("Jan" in label for label in labels(slots))
    assert slots["demo_period"] == "in January 2026"


async def test_a_demo_on_an_afternoon_offers_times_an_hour_apart_that_afternoon(
    fake: FakeBackend,
) -> None:
    person(fake)
    fake.book(fake.add_person("web", "someone-else"), utc(13, 19))  # Thu 12:00 PDT
    slots = await offered_for(fake, "a demo next Thursday afternoon")
    assert labels(slots) == [
        "Thu 13 Mar, 12:30 PDT",
        "Thu 13 Mar, 13:30 PDT",
        "Thu 13 Mar, 14:30 PDT",
        "Thu 13 Mar, 15:30 PDT",
    ]
    assert slots["demo_period"] == "on Thu 13 Mar in the afternoon"


async def test_the_afternoon_is_the_persons_afternoon(fake: FakeBackend) -> None:
    person(fake, "Europe/Berlin")
    slots = await offered_for(fake, "a demo on Thursday afternoon")
    # 12:00-17:00 in Berlin is 04:00-09:00 in Los Angeles, before opening: nothing fits,
    # so the first free times from Thursday noon in Berlin on are offered.
    assert slots["demo_offer_kind"] == "nearest"
    assert labels(slots)[0] == "Thu 13 Mar, 17:00 CET"
    assert min(offered_times(slots)) == utc(13, 16)


async def test_a_closed_day_gets_the_first_free_times_after_it(fake: FakeBackend) -> None:
    person(fake)
    slots = await offered_for(fake, "a demo on Saturday?")
    assert slots["demo_offer_kind"] == "nearest"
    assert slots["demo_period"] == "on Sat 15 Mar"
    assert labels(slots) == [
        "Mon 17 Mar, 09:00 PDT",
        "Tue 18 Mar, 09:00 PDT",
        "Wed 19 Mar, 09:00 PDT",
        "Thu 20 Mar, 09:00 PDT",
    ]


async def test_a_period_beyond_the_booking_horizon_is_said_to_be_too_far(
    fake: FakeBackend,
) -> None:
    person(fake)
    slots = await offered_for(fake, "could we do the demo in August?")
    assert slots["demo_offer_kind"] == "too_far"
    assert slots["demo_offer_count"] == "0"
    assert slots["demo_period"] == "in August"
    assert slots["demo_days_ahead"] == "90"


async def test_without_a_period_the_next_free_times_are_offered(fake: FakeBackend) -> None:
    person(fake)
    slots = await offered_for(fake, "book a demo")
    assert slots["demo_offer_kind"] == "next"
    assert slots["demo_period"] is None
    assert labels(slots)[0] == "Mon 10 Mar, 11:00 PDT"


async def test_asking_to_move_a_demo_to_next_week_offers_next_week(fake: FakeBackend) -> None:
    demo_id = fake.book(person(fake), utc(11, 16))
    slots = await offered_for(fake, "can we move it to next week", intent="reschedule_demo")
    assert slots["demo_mode"] == "reschedule"
    assert slots["demo_id"] == demo_id
    assert labels(slots)[0] == "Mon 17 Mar, 09:00 PDT"


def test_times_offered_for_a_period_keep_to_it_and_skip_booked_ones(business: Business) -> None:
    next_week = Period(date(2025, 3, 17), date(2025, 3, 23))
    kind, slots = offer_for(next_week, business, MONDAY_9AM, {utc(17, 16)}, LA, 4)
    assert kind == "period"
    assert [s.starts_at for s in slots] == [utc(17, 16, 30), utc(18, 16), utc(19, 16), utc(20, 16)]


def test_demos_are_offered_up_to_90_days_ahead_and_no_further(business: Business) -> None:
    # Monday 10 March + 89 days is Saturday 7 June: Friday 6 June is the last open day.
    last_friday = Period(date(2025, 6, 6), date(2025, 6, 6))
    kind, slots = offer_for(last_friday, business, MONDAY_9AM, set(), LA)
    assert kind == "period"
    assert slots[0].label(LA) == "Fri 6 Jun, 09:00 PDT"
    monday_after = Period(date(2025, 6, 9), date(2025, 6, 9))
    assert offer_for(monday_after, business, MONDAY_9AM, set(), LA) == ("too_far", [])


async def test_choosing_a_stretch_of_time_instead_of_a_time_asks_for_times_in_it(
    fake: FakeBackend,
) -> None:
    person(fake)
    assert await picked(fake, "next week would suit me better", slots=OFFER) == {
        "demo_pick": "period"
    }
    assert (await picked(fake, "next Tuesday morning"))["demo_pick"] == "ok"
