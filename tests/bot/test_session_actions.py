"""The start of a session: the bot says it is a bot first, once per conversation."""

from __future__ import annotations

from rasa_sdk.events import ActionExecuted, SessionStarted, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.session import ActionSessionStart
from tests.bot.conftest import make_tracker

DOMAIN = {"session_config": {"carry_over_slots_to_new_session": True}}


async def test_the_first_session_starts_with_the_bot_saying_it_is_a_bot() -> None:
    tracker = make_tracker("s-1", slots={"first_name": "Ada", "product": None})
    dispatcher = CollectingDispatcher()
    events = await ActionSessionStart().run(dispatcher, tracker, DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_iamabot"]
    assert events == [
        SessionStarted(),
        SlotSet("first_name", "Ada"),
        SlotSet("disclosed", True),
        ActionExecuted("action_listen"),
    ]


async def test_a_later_session_carries_the_slots_over_without_repeating_it() -> None:
    tracker = make_tracker("s-2", slots={"first_name": "Ada", "disclosed": True})
    tracker.events.insert(0, {"event": "session_started"})
    dispatcher = CollectingDispatcher()
    events = await ActionSessionStart().run(dispatcher, tracker, DOMAIN)
    assert dispatcher.messages == []
    assert events == [
        SessionStarted(),
        SlotSet("first_name", "Ada"),
        SlotSet("disclosed", True),
        ActionExecuted("action_listen"),
    ]


async def test_slots_stay_behind_when_the_domain_says_so() -> None:
    tracker = make_tracker("s-3", slots={"first_name": "Ada"})
    tracker.events.insert(0, {"event": "session_started"})
    domain = {"session_config": {"carry_over_slots_to_new_session": False}}
    events = await ActionSessionStart().run(CollectingDispatcher(), tracker, domain)
    assert events == [SessionStarted(), ActionExecuted("action_listen")]


async def test_a_follow_up_being_answered_opens_the_new_session() -> None:
    tracker = make_tracker("+14155552671", slots={"disclosed": True, "follow_up": "demo"})
    tracker.events[:0] = [
        {"event": "session_started"},
        {"event": "action", "name": "action_follow_up"},
        {"event": "bot", "text": "Want a walkthrough? Reply YES."},
        {"event": "slot", "name": "follow_up", "value": "demo"},
        {"event": "action", "name": "action_listen"},
    ]
    events = await ActionSessionStart().run(CollectingDispatcher(), tracker, DOMAIN)
    assert events[-3:] == [
        ActionExecuted("action_follow_up"),
        SlotSet("follow_up", "demo"),
        ActionExecuted("action_listen"),
    ]


async def test_an_answered_follow_up_is_not_carried_into_a_later_session() -> None:
    tracker = make_tracker("+14155552671", slots={"disclosed": True, "follow_up": "demo"})
    tracker.events[:0] = [
        {"event": "session_started"},
        {"event": "action", "name": "action_follow_up"},
        {"event": "action", "name": "action_listen"},
        {"event": "user", "text": "yes"},
        {"event": "action", "name": "action_offer_demo"},
        {"event": "action", "name": "action_listen"},
    ]
    events = await ActionSessionStart().run(CollectingDispatcher(), tracker, DOMAIN)
    assert ActionExecuted("action_follow_up") not in events
