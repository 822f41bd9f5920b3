"""Hand-off to a person: the conversation is marked in the backend, the person is told
when someone will answer (hand-off hours: 08:00-20:00 Monday to Thursday, 08:00-18:00 on
Friday, America/Los_Angeles), and the bot pauses."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from rasa_sdk.events import ConversationPaused, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.handoff import ActionHandoff, ActionPauseConversation, when_someone_answers
from bot.business import load_business
from tests.bot.fakes import FakeBackend, conversation, fixed_clock

UTC = timezone.utc
SENDER = "web-handoff-1"
OPEN = "Someone usually replies within a few minutes."
MONDAY_10AM = datetime(2025, 3, 10, 17, 0, tzinfo=UTC)


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(3, 10, 17), OPEN),  # Monday 10:00 PDT
        (utc(3, 10, 15), OPEN),  # Monday 08:00 PDT, opening
        (utc(3, 11, 2, 59), OPEN),  # Monday 19:59 PDT
        (utc(3, 10, 14), "We're closed right now; someone will reply from 08:00 PDT today."),
        (utc(3, 11, 3), "We're closed right now; someone will reply from 08:00 PDT tomorrow."),
        (utc(3, 11, 4), "We're closed right now; someone will reply from 08:00 PDT tomorrow."),
        (utc(3, 15, 0, 30), OPEN),  # Friday 17:30 PDT
        # Friday 18:30 PDT: closed until Monday.
        (utc(3, 15, 1, 30), "We're closed right now; someone will reply from 08:00 PDT on Monday."),
        (utc(3, 15, 19), "We're closed right now; someone will reply from 08:00 PDT on Monday."),
        (utc(3, 16, 19), "We're closed right now; someone will reply from 08:00 PDT tomorrow."),
        # Saturday 8 March is still winter time; Monday 10 March is summer time.
        (utc(3, 8, 20), "We're closed right now; someone will reply from 08:00 PDT on Monday."),
        (utc(1, 4, 20), "We're closed right now; someone will reply from 08:00 PST on Monday."),
    ],
)
def test_the_person_is_told_when_someone_answers(now: datetime, expected: str) -> None:
    assert when_someone_answers(load_business(), now) == expected


async def hand_off(
    fake: FakeBackend,
    now: datetime = MONDAY_10AM,
    slots: dict[str, Any] | None = None,
    channel: str = "rest",
) -> list[Any]:
    tracker = conversation(SENDER, "can I talk to a human?", "human_handoff", None, channel, slots)
    action = ActionHandoff(fake, clock=fixed_clock(now), business=load_business())
    events: list[Any] = await action.run(CollectingDispatcher(), tracker, {})
    return events


async def test_asking_for_a_person_opens_a_handoff_and_says_when() -> None:
    fake = FakeBackend()
    events = await hand_off(fake, slots={"profile_id": "profile-7"})
    assert events == [
        SlotSet("handoff", "open"),
        SlotSet("handoff_eta", OPEN),
        SlotSet("fallback", None),
    ]
    assert fake.called("open_handoff") == [
        {
            "conversation_id": SENDER,
            "channel": "rest",
            "reason": "requested",
            "profile_id": "profile-7",
        }
    ]


async def test_after_two_misunderstandings_the_reason_is_repeated_failure() -> None:
    fake = FakeBackend()
    await hand_off(fake, slots={"fallback": "offer_person"}, channel="socketio")
    [handoff] = fake.handoffs
    assert (handoff.reason, handoff.channel, handoff.profile_id) == (
        "repeated_failure",
        "socketio",
        None,
    )


async def test_out_of_hours_the_person_hears_when_we_open() -> None:
    events = await hand_off(FakeBackend(), now=utc(3, 15, 19))  # Saturday noon
    assert (
        SlotSet(
            "handoff_eta", "We're closed right now; someone will reply from 08:00 PDT on Monday."
        )
        in events
    )


async def test_when_the_backend_is_down_no_handoff_is_promised() -> None:
    fake = FakeBackend()
    fake.down = True
    assert await hand_off(fake, slots={"fallback": "offer_person"}) == [
        SlotSet("handoff", "failed")
    ]


async def test_the_bot_pauses_after_handing_off() -> None:
    tracker = conversation(SENDER, "can I talk to a human?", "human_handoff")
    events = await ActionPauseConversation().run(CollectingDispatcher(), tracker, {})
    assert events == [ConversationPaused()]
