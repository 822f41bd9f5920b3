"""Parley's tracker store (bot/tracker_store.py) against Rasa's own `SQLTrackerStore`:
the same conversation saved through each, on SQLite and on PostgreSQL, stores the same
events and hands the event broker the same ones; and both endpoint files load it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore, TrackerStore
from rasa.core.utils import AvailableEndpoints
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)

from bot.settings import PROJECT_ROOT
from bot.tracker_store import ParleySQLTrackerStore
from tests.servers import POSTGRES_DSN, server_missing

CONVERSATION = "+14155550123"


class Published(EventBroker):  # type: ignore[misc]
    """An event broker that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def _turns() -> list[list[Event]]:
    """A conversation's saves: a session start, a turn, a follow-up recorded, nothing
    new, then a second session and a turn in it (timestamps fixed, so that two runs
    give equal events)."""
    at = iter(float(1_800_000_000 + n) for n in range(100))
    intent = {"name": "greet", "confidence": 0.98}

    def start() -> list[Event]:
        return [
            ActionExecuted("action_session_start", timestamp=next(at)),
            SessionStarted(timestamp=next(at)),
            ActionExecuted("action_listen", timestamp=next(at)),
        ]

    def turn(text: str) -> list[Event]:
        return [
            UserUttered(text, intent, parse_data={"intent": intent, "text": text},
                        timestamp=next(at)),
            ActionExecuted("utter_greet", timestamp=next(at)),
            BotUttered("Hi! What's your name?", timestamp=next(at)),
            ActionExecuted("action_listen", timestamp=next(at)),
        ]  # fmt: skip

    follow_up = [
        ActionExecuted("action_follow_up", timestamp=next(at)),
        BotUttered("Your trial ends tomorrow. Want a walkthrough?", timestamp=next(at)),
        SlotSet("follow_up", "demo", timestamp=next(at)),
        ActionExecuted("action_listen", timestamp=next(at)),
    ]
    return [start(), turn("hi"), follow_up, [], start(), turn("hello again")]


async def _converse(store: TrackerStore, domain: Domain) -> None:
    """Save each turn as Rasa does: the tracker read afresh, updated, saved."""
    for events in _turns():
        tracker = await store.get_or_create_tracker(CONVERSATION, append_action_listen=False)
        for event in events:
            tracker.update(event, domain)
        await store.save(tracker)


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two empty databases, one for each store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rasa.db'}", f"sqlite:///{tmp_path / 'parley.db'}"
        return
    try:
        admin = psycopg2.connect(POSTGRES_DSN, connect_timeout=5)
    except psycopg2.OperationalError as error:
        server_missing(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {error}")
    admin.autocommit = True
    names = [f"parley_tracker_{secrets.token_hex(6)}" for _ in range(2)]
    try:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'CREATE DATABASE "{name}"')
        base = POSTGRES_DSN.rsplit("/", 1)[0]
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with admin.cursor() as cursor:
            for name in names:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


async def test_a_conversation_is_stored_and_published_as_rasas_own_store_does(
    domain: Domain, database_urls: tuple[str, str]
) -> None:
    rasa_url, parley_url = database_urls
    rasas, parleys = Published(), Published()
    rasa_store = SQLTrackerStore(domain, host=rasa_url, event_broker=rasas)
    parley_store = ParleySQLTrackerStore(domain, host=parley_url, event_broker=parleys)
    try:
        await _converse(rasa_store, domain)
        await _converse(parley_store, domain)

        expected = [e for events in _turns() for e in events]
        stored = await parley_store.retrieve_full_tracker(CONVERSATION)
        assert stored is not None
        assert [e.as_dict() for e in stored.events] == [e.as_dict() for e in expected]
        rasa_stored = await rasa_store.retrieve_full_tracker(CONVERSATION)
        assert rasa_stored is not None
        assert [e.as_dict() for e in stored.events] == [e.as_dict() for e in rasa_stored.events]
        # Each event reached the broker once, in order, as with Rasa's store.
        assert parleys.events == rasas.events
        assert [e["event"] for e in parleys.events] == [e.type_name for e in expected]
        assert {e["sender_id"] for e in parleys.events} == {CONVERSATION}
        # The current session is read back as Rasa reads it: from its session start on.
        latest = await parley_store.retrieve(CONVERSATION)
        assert latest is not None
        assert [e.as_dict() for e in latest.events] == [e.as_dict() for e in expected[-6:]]
    finally:
        rasa_store.engine.dispose()
        parley_store.engine.dispose()


@pytest.mark.parametrize("name", ["endpoints.yml", "endpoints.scale.yml"])
def test_both_profiles_load_parleys_tracker_store_through_rasa(
    name: str, domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = PROJECT_ROOT / "bot" / name
    for variable in set(re.findall(r"\$\{(\w+)\}", path.read_text())):
        monkeypatch.setenv(variable, "localhost")
    monkeypatch.setenv("PARLEY_RASA_TRACKER_STORE_URL", f"sqlite:///{tmp_path / 'rasa.db'}")
    config = AvailableEndpoints.read_endpoints(str(path)).tracker_store

    store = TrackerStore.create(config, domain)

    # Rasa falls back to an in-memory store, with only a warning, when it cannot load
    # the class a file names: that would lose every conversation at a restart.
    found = getattr(store, "_tracker_store", store)
    assert isinstance(found, ParleySQLTrackerStore)
    assert str(found.engine.url) == f"sqlite:///{tmp_path / 'rasa.db'}"
