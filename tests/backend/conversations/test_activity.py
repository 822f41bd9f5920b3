"""Conversations as the backend's record has them (GET /api/v1/conversations) and the
overview's figures (GET /api/v1/overview), from the messages people sent (each an
intent_expressed event with its channel and conversation), hand-offs, the consent
ledger, qualified leads and demos."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from backend.core.clock import FixedClock
from tests.backend.conftest import Api

SMS, WEB = "+14155550101", "chat-9a7f"


def said(conversation: str, channel: str, intent: str, at: str) -> dict[str, Any]:
    kind = "web" if channel == "webchat" else "sms"
    return {
        "type": "intent_expressed", "occurred_at": at,
        "identity": {"kind": kind, "address": conversation},
        "properties": {"intent": intent, "channel": channel, "conversation": conversation},
    }  # fmt: skip


async def story(service: Api) -> None:
    await service.post(
        "/api/v1/events",
        {"events": [
            said(SMS, "sms", "greet", "2026-03-01T10:00:00Z"),
            said(SMS, "sms", "ask_price", "2026-03-01T10:01:00Z"),
            said(WEB, "webchat", "nlu_fallback", "2026-03-01T12:00:00Z"),
            said(WEB, "webchat", "human_handoff", "2026-03-02T08:00:00Z"),
            {"type": "demo_booked", "occurred_at": "2026-03-02T08:30:00Z",
             "identity": {"kind": "sms", "address": SMS}},
            {"type": "lead_qualified", "occurred_at": "2026-03-01T10:05:00Z",
             "identity": {"kind": "sms", "address": SMS}},
        ]},
    )  # fmt: skip
    await service.post(
        "/api/v1/handoffs", {"conversation_id": WEB, "channel": "webchat", "reason": "requested"},
        expect=201,
    )  # fmt: skip


async def test_conversations_are_listed_and_filtered(
    service: Api, marketer: Api, clock: FixedClock
) -> None:
    await story(service)
    period = "since=2026-03-01&until=2026-03-03"
    listed = await marketer.get(f"/api/v1/conversations?{period}")
    assert [(c["conversation_id"], c["channel"], c["messages"]) for c in listed["items"]] == [
        (WEB, "webchat", 2), (SMS, "sms", 2)
    ]  # fmt: skip
    web, sms = listed["items"]
    assert (web["fell_back"], web["handed_off"]) == (True, True)
    assert sms["intents"] == ["greet", "ask_price"] and not sms["handed_off"]
    only = {
        "channel=sms": [SMS],
        "intent=ask_price": [SMS],
        "handed_off=true": [WEB],
        "fell_back=true": [WEB],
        "channel=voice": [],
    }
    for query, wanted in only.items():
        got = await marketer.get(f"/api/v1/conversations?{period}&{query}")
        assert [c["conversation_id"] for c in got["items"]] == wanted, query
    # Listed when it has a message in the period, with the whole conversation's figures.
    late = await marketer.get("/api/v1/conversations?since=2026-03-02&until=2026-03-03")
    assert [(c["conversation_id"], c["messages"]) for c in late["items"]] == [(WEB, 2)]
    # A conversation that was quiet all through the period is not listed, though it
    # began before it and went on after it.
    clock.advance(timedelta(days=4))
    await service.post(
        "/api/v1/events", {"events": [said(SMS, "sms", "goodbye", "2026-03-05T09:00:00Z")]}
    )
    quiet = await marketer.get("/api/v1/conversations?since=2026-03-02&until=2026-03-04")
    assert [c["conversation_id"] for c in quiet["items"]] == [WEB]
    both = await marketer.get("/api/v1/conversations?since=2026-03-01&until=2026-03-06&limit=1")
    assert [(c["conversation_id"], c["messages"]) for c in both["items"]] == [(SMS, 3)]
    bad = await marketer.get("/api/v1/conversations?since=yesterday", expect=400)
    assert bad["type"] == "urn:parley:problem:invalid-query"


async def test_the_overview_counts_the_period(service: Api, marketer: Api) -> None:
    await story(service)
    person = await service.identify("sms", SMS)
    for action, reply in (("grant", "ok"), ("confirm", "YES"), ("withdraw", "STOP")):
        await service.post(
            f"/api/v1/profiles/{person['id']}/consent",
            {"channel": "sms", "purpose": "marketing", "action": action, "source": "sms_keyword",
             "reply": reply, "occurred_at": "2026-03-01T11:00:00Z"},
            expect=201,
        )  # fmt: skip
    got = await marketer.get("/api/v1/overview?since=2026-03-01&until=2026-03-03")
    assert (got["conversations"], got["messages"], got["handoffs"]) == (2, 4, 1)
    assert got["conversations_by_channel"] == {
        "sms": [{"day": "2026-03-01", "count": 1}, {"day": "2026-03-02", "count": 0}],
        "webchat": [{"day": "2026-03-01", "count": 1}, {"day": "2026-03-02", "count": 1}],
    }
    assert got["fallback_rate"] == 0.25 and got["handoff_rate"] == 0.5
    assert dict(got["top_intents"]) == {
        "greet": 1,
        "ask_price": 1,
        "nlu_fallback": 1,
        "human_handoff": 1,
    }
    assert [d["count"] for d in got["demos_booked"]] == [0, 1]
    assert [d["count"] for d in got["qualified_leads"]] == [1, 0]
    assert [d["count"] for d in got["opt_ins"]] == [1, 0]  # the YES, not the question
    assert [d["count"] for d in got["opt_outs"]] == [1, 0]
