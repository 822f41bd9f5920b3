"""The guards at the door: quiet hours in the person's time zone and the frequency cap,
for marketing sent through the messages API; held messages kept, listed, released when
they may go (consent checked again), cancelled. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from backend.api.keys import SESSIONS, WORKER
from backend.core.clock import FixedClock
from backend.core.models import Enrolment, HeldMessage
from backend.messaging.guards import (
    Caps,
    ContactRules,
    HoldReason,
    QuietHours,
    hold_for,
)
from tests.backend.conftest import StartTexting, TextingBackend

PERSON = "+14155552671"  # San Francisco: America/Los_Angeles
LA = ZoneInfo("America/Los_Angeles")


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A moment in March 2026 on the person's clock, in UTC."""
    return datetime(2026, 3, day, hour, minute, tzinfo=LA).astimezone(UTC)


@pytest.fixture
async def texting(start_texting: StartTexting) -> TextingBackend:
    return await start_texting()


async def subscribed(texting: TextingBackend) -> str:
    profile = await texting.api.identify("sms", PERSON)
    await texting.subscribe(profile["id"])
    return str(profile["id"])


def move_to(clock: FixedClock, when: datetime) -> None:
    assert when >= clock.now()
    clock.advance(when - clock.now())


async def release(texting: TextingBackend) -> int:
    return await texting.app[WORKER].release_held()


OFFER = {"to": PERSON, "body": "Spring sale: 20% off this week.", "purpose": "marketing"}


# ----------------------------------------------------------------------- quiet hours


async def test_a_marketing_text_at_eleven_at_night_is_held_until_eight_and_then_sent(
    texting: TextingBackend, clock: FixedClock
) -> None:
    await subscribed(texting)
    move_to(clock, local(2, 23))
    before = len(texting.sent_to(PERSON))

    answer = await texting.api.post("/api/v1/messages", OFFER, expect=202)
    held = answer["held"]
    assert answer["messages"] == []
    assert (held["reason"], held["status"]) == ("quiet-hours", "held")
    assert datetime.fromisoformat(held["not_before"]) == local(3, 8)
    assert texting.sent_to(PERSON)[before:] == []
    listed = await texting.api.get("/api/v1/held-messages?status=held")
    assert [h["id"] for h in listed["items"]] == [held["id"]]

    move_to(clock, local(3, 7, 59))
    assert await release(texting) == 0
    assert texting.sent_to(PERSON)[before:] == []

    move_to(clock, local(3, 8))
    assert await release(texting) == 1
    assert texting.sent_to(PERSON)[before:] == [OFFER["body"]]
    gone = await texting.api.get(f"/api/v1/held-messages/{held['id']}")
    assert gone["status"] == "sent"
    message = await texting.api.get(f"/api/v1/messages/{gone['message_id']}")
    assert (message["body"], message["purpose"]) == (OFFER["body"], "marketing")
    # Released once: another round sends nothing more.
    assert await release(texting) == 0
    assert texting.sent_to(PERSON)[before:] == [OFFER["body"]]


async def test_a_caller_may_ask_to_be_refused_with_the_time_it_may_go_instead(
    texting: TextingBackend, clock: FixedClock
) -> None:
    await subscribed(texting)
    move_to(clock, local(2, 22, 30))
    refused = await texting.api.post(
        "/api/v1/messages", {**OFFER, "if_not_now": "refuse"}, expect=409
    )
    assert refused["type"] == "urn:parley:problem:quiet-hours"
    assert datetime.fromisoformat(refused["not_before"]) == local(3, 8)
    assert "2026-03-03T16:00:00+00:00" in refused["detail"]
    async with texting.app[SESSIONS]() as session:
        assert await session.scalar(select(func.count()).select_from(HeldMessage)) == 0


async def test_transactional_texts_are_not_held_at_night(
    texting: TextingBackend, clock: FixedClock
) -> None:
    move_to(clock, local(2, 23, 30))
    await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "Your demo moved to 9am.", "purpose": "transactional"},
        expect=201,
    )
    assert texting.sent_to(PERSON) == ["Your demo moved to 9am."]


async def test_the_same_send_key_is_the_same_held_message(
    texting: TextingBackend, clock: FixedClock
) -> None:
    await subscribed(texting)
    move_to(clock, local(2, 23))
    first = await texting.api.post("/api/v1/messages", {**OFFER, "send_key": "k1"}, expect=202)
    again = await texting.api.post("/api/v1/messages", {**OFFER, "send_key": "k1"}, expect=200)
    assert again["held"]["id"] == first["held"]["id"]
    listed = await texting.api.get("/api/v1/held-messages")
    assert len(listed["items"]) == 1


# ------------------------------------------------------------- what happens meanwhile


async def test_a_withdrawal_while_held_refuses_the_message_when_its_time_comes(
    texting: TextingBackend, clock: FixedClock
) -> None:
    await subscribed(texting)
    move_to(clock, local(2, 23))
    held = (await texting.api.post("/api/v1/messages", OFFER, expect=202))["held"]
    await texting.texted(PERSON, "STOP")
    sent_before = len(texting.sent_to(PERSON))

    move_to(clock, local(3, 8))
    assert await release(texting) == 1
    assert texting.sent_to(PERSON)[sent_before:] == []
    after = await texting.api.get(f"/api/v1/held-messages/{held['id']}")
    assert after["status"] == "refused"
    assert "consent-refused" in after["detail"]


async def test_a_held_message_can_be_cancelled_and_is_then_never_sent(
    texting: TextingBackend, clock: FixedClock
) -> None:
    await subscribed(texting)
    move_to(clock, local(2, 23))
    held = (await texting.api.post("/api/v1/messages", OFFER, expect=202))["held"]
    before = len(texting.sent_to(PERSON))

    cancelled = await texting.api.delete(f"/api/v1/held-messages/{held['id']}", expect=200)
    assert cancelled["status"] == "cancelled"
    again = await texting.api.delete(f"/api/v1/held-messages/{held['id']}", expect=409)
    assert again["type"] == "urn:parley:problem:held-not-held"
    await texting.api.delete("/api/v1/held-messages/999999", expect=404)
    await texting.api.get("/api/v1/held-messages/nope", expect=404)

    move_to(clock, local(3, 9))
    assert await release(texting) == 0
    assert texting.sent_to(PERSON)[before:] == []


async def test_held_messages_survive_a_restart(
    start_texting: StartTexting, clock: FixedClock
) -> None:
    first = await start_texting()
    await subscribed(first)
    move_to(clock, local(2, 23))
    held = (await first.api.post("/api/v1/messages", OFFER, expect=202))["held"]

    # Another backend on the same database, the first one gone (its scheduler would
    # otherwise release the message itself when the clock moves on).
    await first.client.close()
    second = await start_texting()
    move_to(clock, local(3, 8, 5))
    assert await release(second) == 1
    assert second.sent_to(PERSON) == [OFFER["body"]]
    assert (await second.api.get(f"/api/v1/held-messages/{held['id']}"))["status"] == "sent"


# --------------------------------------------------------------------- the frequency cap


async def test_the_cap_holds_a_second_marketing_text_for_a_day_across_callers(
    texting: TextingBackend, clock: FixedClock
) -> None:
    """data/business.yml: one marketing message a day. The first goes; the second is
    held until the first leaves the 24-hour window."""
    await subscribed(texting)
    sent_at = clock.now()  # 10:30 in San Francisco
    before = len(texting.sent_to(PERSON))
    await texting.api.post("/api/v1/messages", OFFER, expect=201)
    move_to(clock, sent_at + timedelta(hours=2))
    second = {**OFFER, "body": "Only two days left."}
    held = (await texting.api.post("/api/v1/messages", second, expect=202))["held"]
    assert held["reason"] == "frequency-cap"
    assert datetime.fromisoformat(held["not_before"]) == sent_at + timedelta(days=1, minutes=1)

    move_to(clock, sent_at + timedelta(days=1))
    assert await release(texting) == 0
    move_to(clock, sent_at + timedelta(days=1, minutes=1))
    assert await release(texting) == 1
    assert texting.sent_to(PERSON)[before:] == [OFFER["body"], "Only two days left."]


# --------------------------------------------------------------- the rules, unit by unit


def test_a_sequence_may_tighten_the_business_limits_but_never_loosen_them() -> None:
    business = ContactRules(caps=Caps(per_24h=2, per_7d=4))
    assert business.limits().per_24h == 2
    looser = business.limits(Caps(per_24h=5, per_7d=20))
    assert (looser.per_24h, looser.per_7d) == (2, 4)
    tighter = business.limits(Caps(per_24h=1))
    assert (tighter.per_24h, tighter.per_7d) == (1, 4)
    # The sequence's quiet hours add to the business's (21:00 to 08:00 by default).
    lunch = QuietHours(start=time(12), end=time(14))
    both = business.limits(quiet=lunch)
    assert len(both.quiet) == 2
    assert hold_for(local(2, 12, 30), LA, [], both) is not None
    assert hold_for(local(2, 22), LA, [], both) is not None
    assert hold_for(local(2, 10), LA, [], both) is None


def test_quiet_hours_and_the_cap_together_wait_for_the_later_of_both() -> None:
    limits = ContactRules().limits()  # 21:00 to 08:00, 1 a day, 3 a week
    # Sent yesterday at 09:00; now 22:00: quiet until 08:00, and the cap frees at 09:01.
    hold = hold_for(local(3, 22), LA, [local(3, 9)], limits)
    assert hold is not None
    assert (hold.until, hold.reason) == (local(4, 9, 1), HoldReason.QUIET_HOURS)
    # Three this week: the next may go when the oldest is a week old, in the daytime.
    week = [local(2, 10), local(4, 10), local(6, 10)]
    hold = hold_for(local(7, 11), LA, week, limits)
    assert hold is not None and hold.reason is HoldReason.FREQUENCY_CAP
    assert hold.until == local(2, 10) + timedelta(days=7, minutes=1)


# ------------------------------------------------------------------- one person, merged


async def test_a_merge_moves_messages_held_messages_and_enrolments_so_the_cap_sees_one_person(
    texting: TextingBackend, clock: FixedClock
) -> None:
    other_number = "+14155550123"
    one = await subscribed(texting)
    two = str((await texting.api.identify("sms", other_number))["id"])
    await texting.subscribe(two)
    for person in (one, two):
        await texting.api.post(
            "/api/v1/events", {"type": "trial_started", "profile_id": person}, expect=None
        )
    sent_at = clock.now()  # 10:30 in San Francisco: an offer to the first number
    await texting.api.post("/api/v1/messages", OFFER, expect=201)
    move_to(clock, local(2, 23))  # the second number's is held until 08:00
    held = (await texting.api.post("/api/v1/messages", {**OFFER, "to": other_number}, expect=202))[
        "held"
    ]

    merged = await texting.api.post(f"/api/v1/profiles/{one}/merge", {"other": two})
    survivor = merged["profile"]["id"]
    page = await texting.api.get(f"/api/v1/profiles/{survivor}/messages")
    assert {m["to_address"] for m in page["items"]} == {PERSON, other_number}
    assert (await texting.api.get(f"/api/v1/held-messages/{held['id']}"))["profile_id"] == survivor
    async with texting.app[SESSIONS]() as session:
        enrolments = (
            await session.execute(
                select(Enrolment.profile_id, Enrolment.status, Enrolment.exit_reason).where(
                    Enrolment.sequence == "trial-nurture"
                )
            )
        ).all()
    assert sorted((str(p), s, r) for p, s, r in enrolments) == sorted(
        [(survivor, "active", None), (survivor, "exited", "merged")]
    )

    # Alone, the second number would get its offer at 08:00; one person has had one
    # today already, so it waits for the cap.
    move_to(clock, local(3, 8))
    assert await release(texting) == 1
    after = await texting.api.get(f"/api/v1/held-messages/{held['id']}")
    assert after["status"] == "held"
    assert datetime.fromisoformat(after["not_before"]) == sent_at + timedelta(days=1, minutes=1)
