"""The conversations' roll-ups (backend/conversations/rollups.py): kept as each message
is recorded, they hold what migration 0016 builds from the same events, whatever order
and batches the messages came in; a merge carries them to the survivor."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from backend.core.clock import FixedClock
from backend.core.database import create_engine
from backend.core.settings import Settings
from tests.backend.conftest import Api, migrate_again_from

SMS, WEB, REST = "+14155550101", "chat-9a7f", "rest-7"


def said(conversation: str, at: str, intent: str | None = None, **more: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"conversation": conversation}
    if conversation == SMS:
        properties["channel"] = "sms"
    elif conversation == WEB:
        properties["channel"] = "webchat"
    if intent is not None:
        properties["intent"] = intent
    kind = "sms" if conversation == SMS else "web"
    return {
        "type": "intent_expressed", "occurred_at": at, "properties": properties,
        "identity": {"kind": kind, "address": conversation}, **more,
    }  # fmt: skip


async def record_in_pieces(service: Api) -> None:
    """Messages in several batches, one arriving late (older than those before it), one
    twice, one without an intent, one without a channel, one without a conversation."""
    batches = [
        [said(SMS, "2026-03-01T10:00:00Z", "greet"), said(SMS, "2026-03-01T10:01:00Z", "ask_price"),
         said(WEB, "2026-03-01T12:00:00Z", "greet", idempotency_key="web-1")],
        [said(SMS, "2026-03-02T08:00:00Z", "nlu_fallback"),
         said(WEB, "2026-03-01T12:00:00Z", "greet", idempotency_key="web-1"),
         said(WEB, "2026-03-02T09:00:00Z")],
        [said(SMS, "2026-02-28T23:59:00Z", "greet"), said(REST, "2026-03-02T09:10:00Z", "greet"),
         {"type": "intent_expressed", "occurred_at": "2026-03-02T09:00:00Z",
          "identity": {"kind": "web", "address": "chat-old"}, "properties": {"intent": "greet"}}],
    ]  # fmt: skip
    for batch in batches:
        await service.post("/api/v1/events", {"events": batch})


async def snapshot(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every roll-up row, with each conversation named rather than numbered."""
    queries = {
        "conversations": "SELECT conversation, profile_id, channel, started_at, last_at,"
        " messages, fallbacks FROM conversation_rollups",
        "intents": "SELECT c.conversation, i.intent, i.first_at, i.messages FROM"
        " conversation_intent_rollups i JOIN conversation_rollups c ON c.id = i.conversation_id",
        "days": "SELECT c.conversation, d.day FROM conversation_day_rollups d"
        " JOIN conversation_rollups c ON c.id = d.conversation_id",
        "channels": "SELECT day, channel, conversations FROM daily_channel_rollups",
        "daily intents": "SELECT day, channel, intent, messages FROM daily_intent_rollups",
    }
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            return {
                name: sorted(
                    tuple(str(v) for v in row) for row in await connection.execute(text(q))
                )
                for name, q in queries.items()
            }
    finally:
        await engine.dispose()


async def rebuild_by_migration(settings: Settings) -> None:
    await migrate_again_from(settings.resolved_database_url, "0015")


async def test_what_recording_keeps_is_what_the_migration_builds(
    service: Api, marketer: Api, settings: Settings
) -> None:
    await record_in_pieces(service)
    kept = await snapshot(settings)

    conversations = {row[0]: row[2:] for row in kept["conversations"]}
    assert set(conversations) == {SMS, WEB, REST}  # chat-old named no conversation
    # channel, started, last, messages, fallbacks
    assert conversations[SMS][0] == "sms" and conversations[SMS][3:] == ("4", "1")
    assert conversations[SMS][1].startswith("2026-02-28 23:59")
    assert conversations[WEB][0] == "webchat" and conversations[WEB][3:] == ("2", "0")
    assert conversations[REST][0] == "rest"
    assert [row[1] for row in kept["days"] if row[0] == SMS] == [
        "2026-02-28", "2026-03-01", "2026-03-02",
    ]  # fmt: skip
    assert ("2026-03-01", "sms", "1") in kept["channels"]
    assert ("2026-03-02", "webchat", "", "1") in kept["daily intents"]  # said without intent
    assert [(row[0], row[1], row[3]) for row in kept["intents"] if row[0] == SMS] == [
        (SMS, "ask_price", "1"), (SMS, "greet", "2"), (SMS, "nlu_fallback", "1"),
    ]  # fmt: skip

    await rebuild_by_migration(settings)
    assert await snapshot(settings) == kept

    listed = await marketer.get("/api/v1/conversations?since=2026-02-28&until=2026-03-03")
    assert [(c["conversation_id"], c["intents"]) for c in listed["items"]] == [
        (REST, ["greet"]), (WEB, ["greet"]), (SMS, ["greet", "ask_price", "nlu_fallback"]),
    ]  # fmt: skip
    figures = await marketer.get("/api/v1/overview?since=2026-02-28&until=2026-03-03")
    assert (figures["conversations"], figures["messages"]) == (3, 7)
    assert figures["conversations_by_channel"]["sms"] == [
        {"day": "2026-02-28", "count": 1}, {"day": "2026-03-01", "count": 1},
        {"day": "2026-03-02", "count": 1},
    ]  # fmt: skip


async def test_a_merge_gives_the_conversations_to_the_survivor(
    service: Api, marketer: Api, clock: FixedClock
) -> None:
    texter = await service.identify("sms", SMS)  # the older profile: it survives
    clock.advance(timedelta(minutes=1))
    await service.post("/api/v1/events", {"events": [said(WEB, "2026-03-02T09:31:00Z", "greet")]})
    visitor = await service.identify("web", WEB)
    assert visitor["id"] != texter["id"]
    merged = await service.post(f"/api/v1/profiles/{visitor['id']}/merge", {"other": texter["id"]})
    assert merged["profile"]["id"] == texter["id"]
    clock.advance(timedelta(minutes=1))
    listed = await marketer.get("/api/v1/conversations")
    assert [(c["conversation_id"], c["profile_id"]) for c in listed["items"]] == [
        (WEB, texter["id"])
    ]


async def test_concurrent_recordings_add_up_without_deadlock(
    service: Api, marketer: Api, clock: FixedClock
) -> None:
    """Batches recorded at once, each adding to the same daily counts and to two
    conversations in opposite orders: every one is stored and every message counted."""
    pairs = [(f"chat-{n}", f"chat-{(n + 1) % 12}") for n in range(12)]

    async def record(n: int, first: str, second: str) -> None:
        at = "2026-03-02T09:00:00Z"
        batch = [said(first, at, "greet", idempotency_key=f"a{n}"),
                 said(second, at, "ask_price", idempotency_key=f"b{n}")]  # fmt: skip
        await service.post("/api/v1/events", {"events": batch[:: 1 if n % 2 else -1]})

    await asyncio.gather(*(record(n, *pair) for n, pair in enumerate(pairs)))
    clock.advance(timedelta(minutes=1))
    figures = await marketer.get("/api/v1/overview?since=2026-03-02&until=2026-03-03")
    assert (figures["conversations"], figures["messages"]) == (12, 24)
    assert dict(figures["top_intents"]) == {"greet": 12, "ask_price": 12}
    assert figures["conversations_by_channel"] == {"rest": [{"day": "2026-03-02", "count": 12}]}
    listed = await marketer.get("/api/v1/conversations?since=2026-03-02&until=2026-03-03")
    assert {c["conversation_id"]: c["messages"] for c in listed["items"]} == {
        f"chat-{n}": 2 for n in range(12)
    }
