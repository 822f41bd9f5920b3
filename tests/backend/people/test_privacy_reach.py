"""Export, erasure and retention reach every store: the backend's tables (the copy of
Rasa's conversation events consumed from RabbitMQ, `rasa_events`, among them) and Rasa's
tracker store, through the bot's conversation endpoints (a stand-in here, speaking the
contract channels/conversation_batch.py serves and tests/bot/test_conversation_privacy.py
holds the real one to; the end-to-end test runs the real one)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import func, or_, select

from backend import data_files
from backend.api.keys import DIRECTORY, RETENTION, SEQUENCES, SESSIONS
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.models import (
    ConversationRollup,
    Enrolment,
    Event,
    HeldMessage,
    Message,
    RasaEvent,
    SequenceWork,
)
from backend.events.recording import EventRecorder
from backend.rasa_events.store import RasaEventStore, Recorded, read_message
from tests.backend.conftest import Api, IssueToken, StartTexting, TextingBackend

RASA_TOKEN = "privacy-test-rasa-token"
PERSON = "+14155552671"
VISITOR = "chat-7f3a"
SOMEONE_ELSE = "+14155550199"


@dataclass
class TrackerStore:
    """The bot's conversation endpoints, over conversations held in memory."""

    conversations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    retention_calls: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/webhooks/conversations/{id}/tracker", self.read)
        app.router.add_delete("/webhooks/conversations/{id}", self.erase)
        app.router.add_post("/webhooks/conversations/retention", self.retention)
        return app

    def said(self, conversation: str, text: str, at: datetime) -> None:
        self.conversations.setdefault(conversation, []).append(
            {"event": "user", "text": text, "timestamp": at.timestamp()}
        )

    def _check(self, request: web.Request) -> None:
        if self.down:
            raise web.HTTPServiceUnavailable()
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            raise web.HTTPUnauthorized()

    async def read(self, request: web.Request) -> web.Response:
        self._check(request)
        conversation = request.match_info["id"]
        events = self.conversations.get(conversation, [])
        return web.json_response({"sender_id": conversation, "events": events})

    async def erase(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.json_response(
            {"erased": len(self.conversations.pop(request.match_info["id"], []))}
        )

    async def retention(self, request: web.Request) -> web.Response:
        self._check(request)
        body = await request.json()
        self.retention_calls.append(body)
        deleted = 0
        for events in self.conversations.values():
            for event in list(events):
                if deleted < body["limit"] and event["timestamp"] < body["before"]:
                    events.remove(event)
                    deleted += 1
        return web.json_response({"deleted": deleted, "more": deleted == body["limit"]})


@dataclass
class Privacy:
    backend: TextingBackend
    admin: Api
    rasa: TrackerStore
    clock: FixedClock

    async def count(self, model: Any, *where: Any) -> int:
        async with self.backend.app[SESSIONS]() as session:
            return int(
                await session.scalar(select(func.count()).select_from(model).where(*where)) or 0
            )

    async def copied(self, conversation: str, text: str, at: datetime) -> Recorded:
        """A bot message of the conversation, as the consumer of Rasa's events from
        RabbitMQ stores it (the scale profile's copy of the transcript)."""
        app = self.backend.app
        sequences = app[SEQUENCES]
        store = RasaEventStore(
            EventRecorder(app[DIRECTORY], sequences), data_files.load_forms(), self.clock, "US"
        )
        body = {"sender_id": conversation, "event": "bot", "text": text,
                "timestamp": at.timestamp(), "data": {}, "metadata": {}}  # fmt: skip
        async with app[SESSIONS].begin() as session:
            return await store.record(session, [read_message(json.dumps(body).encode())])


@pytest.fixture
async def privacy(
    start_texting: StartTexting,
    issue_token: IssueToken,
    clock: FixedClock,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Privacy:
    rasa = TrackerStore()
    server = await aiohttp_server(rasa.app())
    backend = await start_texting(
        rasa_api_url=str(server.make_url("")).rstrip("/"), rasa_token=SecretStr(RASA_TOKEN),
        scheduler_enabled=False,
    )  # fmt: skip
    return Privacy(backend, Api(backend.client, await issue_token(Role.ADMIN)), rasa, clock)


def said(profile: str, conversation: str, intent: str) -> dict[str, Any]:
    """A message the person sent, as the bot reports it."""
    return {
        "type": "intent_expressed", "profile_id": profile,
        "properties": {"intent": intent, "conversation": conversation,
                       "channel": "webchat" if conversation == VISITOR else "sms"},
    }  # fmt: skip


async def a_person_with_history(privacy: Privacy) -> str:
    """Someone who texted and chatted on the web, agreed to texts, started a trial (so
    is in the trial nurture), has a marketing text held and a hand-off open."""
    api, now = privacy.backend.api, privacy.clock.now()
    person = str((await api.identify("sms", PERSON, first_name="Ada"))["id"])
    await api.post(
        f"/api/v1/profiles/{person}/identities", {"kind": "web", "address": VISITOR}, expect=None
    )
    await privacy.backend.subscribe(person)
    await privacy.backend.texted(PERSON, "What does Brightdesk cost?")
    await api.post("/api/v1/events", {"type": "trial_started", "profile_id": person}, expect=None)
    await api.post(  # 01:30 in San Francisco: held until 08:00
        "/api/v1/messages",
        {"to": PERSON, "body": "Spring sale: 20% off.", "purpose": "marketing"},
        expect=202,
    )
    await api.post(
        "/api/v1/handoffs",
        {"conversation_id": PERSON, "channel": "sms", "reason": "asked_for_human"},
        expect=None,
    )
    privacy.rasa.said(PERSON, "What does Brightdesk cost?", now)
    privacy.rasa.said(VISITOR, "My name is Ada Lovelace", now)
    privacy.rasa.said(SOMEONE_ELSE, "hello", now)
    someone = str((await api.identify("sms", SOMEONE_ELSE))["id"])
    for owner, conversation, intent in (
        (person, PERSON, "ask_price"), (person, VISITOR, "introduce"), (someone, SOMEONE_ELSE, "greet"),
    ):  # fmt: skip
        await api.post("/api/v1/events", said(owner, conversation, intent), expect=None)
    for conversation, text in (
        (PERSON, "Our plans start at $19."),
        (VISITOR, "Nice to meet you, Ada."),
        (SOMEONE_ELSE, "Hi!"),
    ):
        await privacy.copied(conversation, text, now)  # fmt: skip
    return person


async def test_an_export_holds_messages_held_messages_enrolments_and_every_transcript(
    privacy: Privacy,
) -> None:
    person = await a_person_with_history(privacy)
    document = await privacy.admin.get(f"/api/v1/profiles/{person}/export")
    bodies = [m["body"] for m in document["messages"]]
    assert "What does Brightdesk cost?" in bodies
    assert all("status" in m and "to_address" in m for m in document["messages"])
    assert [h["body"] for h in document["held_messages"]] == ["Spring sale: 20% off."]
    assert [e["sequence"] for e in document["enrolments"]] == ["trial-nurture"]
    assert set(document["conversations"]) == {PERSON, VISITOR}
    assert document["conversations"][VISITOR][0]["text"] == "My name is Ada Lovelace"
    # The backend's own copy of their conversations' events, as Rasa published them.
    copies = document["rasa_events"]
    assert {c: [e["text"] for e in events] for c, events in copies.items()} == {
        PERSON: ["Our plans start at $19."], VISITOR: ["Nice to meet you, Ada."],
    }  # fmt: skip
    assert copies[VISITOR][0]["sender_id"] == VISITOR


async def test_erasure_reaches_rasas_tracker_store_and_every_backend_table(
    privacy: Privacy,
) -> None:
    person = await a_person_with_history(privacy)
    before = await privacy.count(Message, or_(Message.to_address == PERSON,
                                              Message.from_address == PERSON))  # fmt: skip
    assert before >= 2

    await privacy.admin.delete(f"/api/v1/profiles/{person}", expect=204)

    assert set(privacy.rasa.conversations) == {SOMEONE_ELSE}
    assert await privacy.count(
        Message, or_(Message.to_address == PERSON, Message.from_address == PERSON)
    ) == 0  # fmt: skip
    assert await privacy.count(HeldMessage) == 0
    assert await privacy.count(Enrolment) == 0
    assert await privacy.count(SequenceWork) == 0
    assert await privacy.count(Event) == 1  # someone else's message
    assert await privacy.count(RasaEvent, RasaEvent.sender_id.in_([PERSON, VISITOR])) == 0
    assert await privacy.count(RasaEvent, RasaEvent.sender_id == SOMEONE_ELSE) == 1
    privacy.clock.advance(timedelta(minutes=1))
    rolled = await privacy.admin.get("/api/v1/conversations")
    assert [c["conversation_id"] for c in rolled["items"]] == [SOMEONE_ELSE]
    await privacy.admin.get(f"/api/v1/profiles/{person}", expect=404)
    [entry] = (await privacy.admin.get(f"/api/v1/audit?target={person}"))["items"][:1]
    assert entry["action"] == "erase_profile"
    assert entry["detail"]["conversations"] == 2
    assert entry["detail"]["conversation_events_erased"] == 2


async def test_a_copy_still_queued_when_its_person_was_erased_is_not_stored_again(
    privacy: Privacy,
) -> None:
    """The queue may hold an erased conversation's events for up to its TTL: those made
    before the erasure stay erased; what the person says afterwards is new."""
    person = await a_person_with_history(privacy)
    before = privacy.clock.now()
    privacy.clock.advance(timedelta(minutes=5))
    await privacy.admin.delete(f"/api/v1/profiles/{person}", expect=204)

    for conversation in (PERSON, VISITOR):
        # (stored, duplicates, erased, reported)
        assert await privacy.copied(conversation, "Late", before) == Recorded(0, 0, 1, 0)
    assert await privacy.count(RasaEvent, RasaEvent.sender_id.in_([PERSON, VISITOR])) == 0
    privacy.clock.advance(timedelta(minutes=5))
    assert await privacy.copied(PERSON, "Back again", privacy.clock.now()) == Recorded(1, 0, 0, 0)


async def test_when_rasa_cannot_be_reached_nothing_is_erased_and_the_admin_is_told(
    privacy: Privacy,
) -> None:
    person = await a_person_with_history(privacy)
    privacy.rasa.down = True
    refused = await privacy.admin.delete(f"/api/v1/profiles/{person}", expect=503)
    assert refused["type"] == "urn:parley:problem:rasa-unavailable"
    await privacy.admin.get(f"/api/v1/profiles/{person}")
    assert await privacy.count(HeldMessage) == 1
    export = await privacy.admin.get(f"/api/v1/profiles/{person}/export", expect=503)
    assert export["type"] == "urn:parley:problem:rasa-unavailable"

    privacy.rasa.down = False
    await privacy.admin.delete(f"/api/v1/profiles/{person}", expect=204)
    assert set(privacy.rasa.conversations) == {SOMEONE_ELSE}


async def test_retention_deletes_what_is_older_in_both_stores_in_small_batches(
    privacy: Privacy,
) -> None:
    """data/business.yml keeps conversations and messages 365 days, events 730."""
    api, clock = privacy.backend.api, privacy.clock
    old = str((await api.identify("sms", PERSON))["id"])
    start = clock.now()
    for n in range(3):
        await api.post(
            "/api/v1/messages",
            {"to": PERSON, "body": f"Reminder {n}", "purpose": "transactional"},
            expect=201,
        )
        await api.post("/api/v1/events", {"type": "page_viewed", "profile_id": old}, expect=None)
        if n == 0:  # a message of theirs, which the conversations' roll-ups count
            await api.post("/api/v1/events", said(old, PERSON, "greet"), expect=None)
        privacy.rasa.said(PERSON, f"old {n}", start)
        await privacy.copied(PERSON, f"old {n}", start + timedelta(seconds=n))
    clock.advance(timedelta(days=400))
    await api.post(
        "/api/v1/messages", {"to": PERSON, "body": "Recent", "purpose": "transactional"},
        expect=201,
    )  # fmt: skip
    await api.post("/api/v1/events", {"type": "page_viewed", "profile_id": old}, expect=None)
    privacy.rasa.said(PERSON, "recent", clock.now())
    await privacy.copied(PERSON, "recent", clock.now())
    retention = privacy.backend.app[RETENTION]
    retention.batch, retention.pause = 2, 0.0

    run = await privacy.admin.post("/api/v1/retention/runs", None, expect=201)
    assert run["status"] == "done"
    assert run["deleted"] == {
        "conversation_events": 3, "rasa_events": 3, "conversation_rollups": 1,
        "held_messages": 0, "messages": 3, "events": 0,
    }  # fmt: skip
    assert await privacy.count(ConversationRollup) == 0
    assert [t["text"] for t in privacy.rasa.conversations[PERSON]] == ["recent"]
    async with privacy.backend.app[SESSIONS]() as session:
        kept = await session.scalars(select(RasaEvent.data))
        assert [e["text"] for e in kept] == ["recent"]
    assert {c["limit"] for c in privacy.rasa.retention_calls} == {2}
    assert len(privacy.rasa.retention_calls) == 2
    cutoff = datetime.fromtimestamp(privacy.rasa.retention_calls[0]["before"], UTC)
    assert cutoff == clock.now() - timedelta(days=365)
    assert await privacy.count(Message, Message.created_at < clock.now() - timedelta(days=365)) == 0
    assert await privacy.count(Message) == 1
    assert await privacy.count(Event) == 5  # events are kept 730 days
    # The daily counts name no one: the overview still counts that day's message.
    day = start.date().isoformat()
    overview = await privacy.admin.get(f"/api/v1/overview?since={day}&until={day}T23:59:59Z")
    assert (overview["messages"], overview["top_intents"]) == (1, [["greet", 1]])

    clock.advance(timedelta(days=400))
    run = await privacy.admin.post("/api/v1/retention/runs", None, expect=201)
    assert run["deleted"]["events"] == 4

    shown = await privacy.admin.get("/api/v1/retention")
    assert (shown["conversations_days"], shown["messages_days"], shown["events_days"]) == (
        365, 365, 730,
    )  # fmt: skip
    assert [r["id"] for r in shown["runs"]] == [run["id"], run["id"] - 1]
    audit = (await privacy.admin.get("/api/v1/audit"))["items"]
    assert [e["detail"]["events"] for e in audit if e["action"] == "retention_run"] == [4, 0]


async def test_the_daily_run_happens_once_a_day_whichever_worker_gets_there(
    privacy: Privacy,
) -> None:
    retention = privacy.backend.app[RETENTION]
    first = await retention.run_if_due()
    assert first is not None and first.started_by == "retention"
    assert await retention.run_if_due() is None
    privacy.clock.advance(timedelta(days=1))
    assert await retention.run_if_due() is not None


async def test_a_day_whose_run_could_not_reach_rasa_is_run_again(privacy: Privacy) -> None:
    # `parley run` starts Rasa beside the backend: a run made before Rasa is up fails,
    # and the day's conversations must still be cleared once Rasa answers.
    retention = privacy.backend.app[RETENTION]
    privacy.rasa.said(PERSON, "old", privacy.clock.now())
    privacy.clock.advance(timedelta(days=400))
    privacy.rasa.down = True
    failed = await retention.run_if_due()
    assert failed is not None and failed.status == "failed"
    assert "Rasa's tracker store could not be reached" in (failed.error or "")
    privacy.rasa.down = False
    again = await retention.run_if_due()
    assert again is not None and again.status == "done"
    assert again.slot == f"{failed.slot}/2"
    assert again.deleted["conversation_events"] == 1
    assert privacy.rasa.conversations[PERSON] == []
    assert await retention.run_if_due() is None
