"""What Rasa's conversation events mean to the backend, read the same way by the bot's
HTTP broker and the backend's consumer of the RabbitMQ queue, and the queue's bounds."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from message_rules.event_queue import queue_bounds
from message_rules.rasa_events import (
    STATE_EVENTS,
    BehaviourEvent,
    ConversationReader,
    ConversationState,
    UnplacedForm,
    behaviour_key,
    event_key,
    state_after,
)

FORMS = frozenset({"lead_form", "subscribe_form"})
NUMBER = "+14155550123"


def user(text: str, intent: str, at: float, channel: str = "sms", **extra: Any) -> dict[str, Any]:
    return {
        "sender_id": NUMBER, "event": "user", "timestamp": at, "text": text,
        "input_channel": channel, "message_id": f"m-{at}",
        "parse_data": {"intent": {"name": intent, "confidence": 0.9, **extra}},
    }  # fmt: skip


def action(name: str, at: float) -> dict[str, Any]:
    return {"sender_id": NUMBER, "event": "action", "name": name, "timestamp": at}


def loop(name: str | None, at: float) -> dict[str, Any]:
    return {"sender_id": NUMBER, "event": "active_loop", "name": name, "timestamp": at}


def lead_form(ended_by: str) -> list[dict[str, Any]]:
    """A conversation in tracker order: the form ends in its last turn, by its own
    action or another's (stamped, as Rasa stamps them, before the action's own event)."""
    return [
        action("action_listen", 1.0), user("we may be interested", "interested", 1.1),
        action("lead_form", 1.3), loop("lead_form", 1.2),
        action("action_listen", 1.4), user("next month", "inform", 2.0),
        action(ended_by, 2.2), loop(None, 2.1),
    ]  # fmt: skip


def read_all(events: list[dict[str, Any]]) -> list[BehaviourEvent | UnplacedForm]:
    reader = ConversationReader(FORMS)
    return [m for m in map(reader.read, events) if m is not None]


def test_every_message_is_an_intent_expressed_keyed_by_its_message_id() -> None:
    said = user("how much?", "ask_price", 1700000000.25)
    [expressed] = read_all([said])
    assert expressed == BehaviourEvent(
        type="intent_expressed", kind="sms", address=NUMBER, properties={"intent": "ask_price", "channel": "sms", "conversation": NUMBER},
        occurred_at=datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=timezone.utc),
        idempotency_key=behaviour_key(NUMBER, "intent_expressed", "m-1700000000.25"),
    )  # fmt: skip


def test_a_faq_is_its_full_name_and_an_intent_triggered_from_outside_is_nothing() -> None:
    faq = user("free trial?", "faq", 1.0, full_retrieval_intent_name="faq/free_trial")
    external = {**user("", "ask_price", 2.0), "metadata": {"is_external": True}}
    assert [m.properties for m in read_all([faq, external])] == [  # type: ignore[union-attr]
        {"intent": "faq/free_trial", "channel": "sms", "conversation": NUMBER}
    ]


def test_a_form_that_ends_itself_is_completed_and_one_stopped_from_outside_is_not() -> None:
    completed = read_all(lead_form("lead_form"))
    assert [(m.type, m.kind, m.properties) for m in completed] == [  # type: ignore[union-attr]
        (
            "intent_expressed",
            "sms",
            {"intent": "interested", "channel": "sms", "conversation": NUMBER},
        ),
        ("intent_expressed", "sms", {"intent": "inform", "channel": "sms", "conversation": NUMBER}),
        ("form_completed", "sms", {"form": "lead_form"}),
    ]
    assert completed[-1] == BehaviourEvent(
        "form_completed", "sms", NUMBER, {"form": "lead_form"},
        datetime.fromtimestamp(2.1, timezone.utc),
        behaviour_key(NUMBER, "form_completed", "lead_form", 2.1),
    )  # fmt: skip
    stopped = read_all(lead_form("action_deactivate_loop"))
    assert [m.type for m in stopped] == ["intent_expressed"] * 2  # type: ignore[union-attr]


def test_a_form_ended_where_no_message_was_seen_cannot_be_placed() -> None:
    appended = [action("lead_form", 1.0), loop("lead_form", 1.1), action("lead_form", 2.0),
                loop(None, 2.1)]  # fmt: skip
    assert read_all(appended) == [UnplacedForm(NUMBER, "lead_form")]
    # A reader that remembers one conversation forgot this one, its form included (the
    # backend reads the state from the events it stored instead).
    reader = ConversationReader(FORMS, remembered=1)
    events = lead_form("lead_form")
    for event in events[:-1]:
        reader.read(event)
    reader.read({**user("hi", "greet", 3.0), "sender_id": "+14155550999"})
    assert reader.read(events[-1]) is None


def test_the_latest_message_and_latest_state_event_hold_the_whole_state() -> None:
    """What the backend reads from the events it stored, instead of memory."""
    conversation = [
        *lead_form("lead_form")[:-1],
        {"sender_id": NUMBER, "event": "slot", "name": "timeline", "value": "soon",
         "timestamp": 2.3},
        {"sender_id": NUMBER, "event": "session_started", "timestamp": 3.0},
        user("hello", "greet", 3.1, channel="voice"), action("utter_greet", 3.2),
        {"sender_id": NUMBER, "event": "bot", "text": "Hi!", "timestamp": 3.3},
    ]  # fmt: skip
    for end in range(len(conversation) + 1):
        seen = conversation[:end]
        users = [e for e in seen if e["event"] == "user"]
        markers = [e for e in seen if e["event"] in STATE_EVENTS]
        latest = [e for e in seen if e in users[-1:] or e in markers[-1:]]
        assert state_after(latest) == state_after(seen), end
    assert state_after(conversation) == ConversationState("voice", "utter_greet")


def test_an_events_key_is_its_content_whatever_else_changes_on_the_way() -> None:
    said = user("how much?", "ask_price", 1700000000.25)
    again = dict(reversed(list({**said, "parse_data": {"text": "changed"}}.items())))
    assert event_key(said) == event_key(again)
    assert event_key(said) != event_key({**said, "timestamp": 1700000000.26})
    assert event_key(said) != event_key({**said, "sender_id": "+14155550999"})
    slot = {"sender_id": NUMBER, "event": "slot", "timestamp": 5.0, "name": "a", "value": 1}
    assert len({event_key(slot), event_key({**slot, "name": "b"}),
                event_key({**slot, "value": 2})}) == 3  # fmt: skip
    assert event_key(said).startswith("rasa-event:") and len(event_key(said)) <= 80


@pytest.mark.parametrize(("length", "hours"), [(0, 1), (1, 0), (-5, 168)])
def test_bounds_that_bound_nothing_are_refused(length: int, hours: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        queue_bounds(length, hours)


def test_the_queue_keeps_the_newest_hundred_thousand_for_a_week_by_default() -> None:
    assert queue_bounds() == {
        "x-max-length": 100_000, "x-overflow": "drop-head", "x-message-ttl": 604_800_000,
    }  # fmt: skip
