"""The batch endpoint the backend's scheduler records follow-ups through, and the locked
read the web chat's history comes from, on a real Sanic server with Rasa's own tracker
store, lock store and the bot's domain. Only the session
start of a new conversation is a stand-in (Rasa's runs the action server), so that these
tests need no trained model; the end-to-end follow-up tests run the real one."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from sanic import Sanic

from bot.settings import PROJECT_ROOT
from channels.conversation_batch import ConversationBatchInput
from tests.bot.conftest import serving

TOKEN = "conversation-batch-test-token"
_apps = itertools.count()


class Processor:
    """Rasa's processor's `fetch_tracker_with_initial_session`, its session start made
    here rather than by the action server."""

    def __init__(self, store: InMemoryTrackerStore, domain: Domain) -> None:
        self.store, self.domain = store, domain

    async def fetch_tracker_with_initial_session(self, conversation_id: str) -> Any:
        tracker = await self.store.get_or_create_tracker(
            conversation_id, append_action_listen=False
        )
        if not tracker.events:
            for event in (
                ActionExecuted("action_session_start"),
                SessionStarted(),
                ActionExecuted("action_listen"),
            ):
                tracker.update(event, self.domain)
        return tracker


@dataclass
class Rasa:
    """The agent's parts the endpoint uses: Rasa's stores and the bot's domain."""

    domain: Domain
    tracker_store: InMemoryTrackerStore
    lock_store: InMemoryLockStore
    processor: Processor

    def is_ready(self) -> bool:
        return True

    async def events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's events as stored (none if it was never saved)."""
        tracker = await self.tracker_store.retrieve(conversation_id)
        if tracker is None:
            return []
        assert isinstance(tracker, DialogueStateTracker)
        return [e.as_dict() for e in tracker.events]


@dataclass
class Endpoint:
    url: str
    rasa: Rasa
    session: aiohttp.ClientSession

    async def append(self, body: Any, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        async with self.session.post(
            f"{self.url}/append", json=body, headers=_bearer(token)
        ) as response:
            return response.status, await response.json(content_type=None)

    async def read(
        self, conversation_id: str, token: str | None = TOKEN
    ) -> tuple[int, dict[str, Any]]:
        async with self.session.get(
            f"{self.url}/{quote(conversation_id, safe='')}/tracker", headers=_bearer(token)
        ) as response:
            return response.status, await response.json(content_type=None)


def _bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@pytest.fixture
async def endpoint(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Endpoint]:
    monkeypatch.setattr(Sanic, "test_mode", True)
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    store = InMemoryTrackerStore(domain)
    rasa = Rasa(domain, store, InMemoryLockStore(), Processor(store, domain))
    app = Sanic(f"conversation_batch_test_{next(_apps)}")
    app.ctx.agent = rasa
    async with (
        serving(app, [ConversationBatchInput(TOKEN)]) as base,
        aiohttp.ClientSession() as session,
    ):
        yield Endpoint(f"{base}/webhooks/conversations", rasa, session)


def follow_up(text: str, asks: str | None = "demo") -> list[dict[str, Any]]:
    return [
        {"event": "action", "name": "action_follow_up"},
        {"event": "bot", "text": text, "metadata": {"sequence_step": "offer"}},
        {"event": "slot", "name": "follow_up", "value": asks},
        {"event": "action", "name": "action_listen"},
    ]


async def test_each_conversation_of_a_batch_gets_its_follow_up_after_its_session_start(
    endpoint: Endpoint,
) -> None:
    status, answer = await endpoint.append(
        {
            "conversations": [
                {"conversation_id": "+14155550101", "events": follow_up("Want a demo?")},
                {"conversation_id": "+14155550102", "events": follow_up("Still there?", None)},
            ]
        }
    )
    assert status == 200
    assert answer == {"appended": ["+14155550101", "+14155550102"], "failed": []}
    events = await endpoint.rasa.events("+14155550101")
    assert [(e["event"], e.get("name")) for e in events] == [
        ("action", "action_session_start"), ("session_started", None),
        ("action", "action_listen"), ("action", "action_follow_up"), ("bot", None),
        ("slot", "follow_up"), ("action", "action_listen"),
    ]  # fmt: skip
    started = events[1]["timestamp"]
    assert all(e["timestamp"] >= started for e in events[3:])  # after the session start
    tracker = await endpoint.rasa.tracker_store.retrieve("+14155550102")
    assert tracker is not None and tracker.latest_bot_utterance is not None
    assert tracker.latest_bot_utterance.text == "Still there?"
    assert tracker.get_slot("follow_up") is None


async def test_a_conversation_that_fails_is_reported_and_the_others_are_appended(
    endpoint: Endpoint,
) -> None:
    status, answer = await endpoint.append(
        {
            "conversations": [
                {"conversation_id": "+14155550103", "events": [{"event": "no_such_event"}]},
                {"conversation_id": "+14155550104", "events": follow_up("Want a demo?")},
            ]
        }
    )
    assert status == 200
    assert answer["appended"] == ["+14155550104"]
    [failed] = answer["failed"]
    assert failed["conversation_id"] == "+14155550103" and failed["error"]
    assert all(e["event"] != "bot" for e in await endpoint.rasa.events("+14155550103"))


async def test_follow_ups_to_one_conversation_at_once_are_both_kept(endpoint: Endpoint) -> None:
    conversation = "+14155550105"
    await asyncio.gather(
        endpoint.append({"conversations": [{"conversation_id": conversation,
                                            "events": follow_up("First.")}]}),
        endpoint.append({"conversations": [{"conversation_id": conversation,
                                            "events": follow_up("Second.")}]}),
    )  # fmt: skip
    said = [e["text"] for e in await endpoint.rasa.events(conversation) if e["event"] == "bot"]
    assert sorted(said) == ["First.", "Second."]


@pytest.mark.parametrize("token", [None, "not-the-token"])
async def test_without_rasas_token_nothing_is_appended(
    endpoint: Endpoint, token: str | None
) -> None:
    body = {"conversations": [{"conversation_id": "+14155550106", "events": follow_up("Hi.")}]}
    status, answer = await endpoint.append(body, token=token)
    assert status == 401 and answer["status"] == 401
    assert await endpoint.rasa.events("+14155550106") == []


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        {"conversations": []},
        {"conversations": [{"conversation_id": "", "events": follow_up("Hi.")}]},
        {"conversations": [{"conversation_id": "+14155550107", "events": []}]},
        {"conversations": [{"conversation_id": "+14155550107", "events": ["bot"]}]},
        {"conversations": ["+14155550107"]},
    ],
)
async def test_a_body_that_is_not_a_batch_gets_a_clear_400(endpoint: Endpoint, body: Any) -> None:
    status, answer = await endpoint.append(body)
    assert status == 400 and "conversations" in answer["title"]
    assert await endpoint.rasa.events("+14155550107") == []


# --- the locked read (the web chat's history) ---------------------------------------------


async def test_a_read_waits_for_the_turn_in_progress_and_sees_what_it_said(
    endpoint: Endpoint,
) -> None:
    """A visitor's first tab already shows the bot's answer while Rasa is still in the
    turn; a second tab reading the history then must see it too."""
    conversation = "c0ffee-visitor"
    rasa = endpoint.rasa
    async with rasa.lock_store.lock(conversation):  # Rasa handling a message
        tracker = await rasa.processor.fetch_tracker_with_initial_session(conversation)
        read = asyncio.create_task(endpoint.read(conversation))
        await asyncio.sleep(0.3)
        assert not read.done()
        for event in (UserUttered("/session_start"), BotUttered("I'm a bot.")):
            tracker.update(event, rasa.domain)
        await rasa.tracker_store.save(tracker)
    status, state = await asyncio.wait_for(read, timeout=5)
    assert status == 200 and state["sender_id"] == conversation
    said = [(e["event"], e.get("text")) for e in state["events"] if e["event"] in ("user", "bot")]
    assert said == [("user", "/session_start"), ("bot", "I'm a bot.")]


async def test_reading_a_conversation_nobody_wrote_in_finds_no_events_and_keeps_none(
    endpoint: Endpoint,
) -> None:
    status, state = await endpoint.read("+14155550108")
    assert status == 200 and state == {"sender_id": "+14155550108", "events": []}
    assert await endpoint.rasa.tracker_store.retrieve("+14155550108") is None


async def test_a_read_shows_the_conversation_as_rasas_tracker_endpoint_does(
    endpoint: Endpoint,
) -> None:
    await endpoint.append(
        {"conversations": [{"conversation_id": "+14155550109", "events": follow_up("Hi.")}]}
    )
    status, state = await endpoint.read("+14155550109")
    assert status == 200
    assert [e["event"] for e in state["events"]] == [
        "action", "session_started", "action", "action", "bot", "slot", "action",
    ]  # fmt: skip
    assert state["slots"]["follow_up"] == "demo"
    assert state["latest_message"] is not None


@pytest.mark.parametrize("token", [None, "not-the-token"])
async def test_without_rasas_token_no_conversation_is_read(
    endpoint: Endpoint, token: str | None
) -> None:
    await endpoint.append(
        {"conversations": [{"conversation_id": "+14155550110", "events": follow_up("Hi.")}]}
    )
    status, answer = await endpoint.read("+14155550110", token=token)
    assert status == 401 and answer["status"] == 401 and "Hi." not in str(answer)
