"""Parley's tracker store (bot/tracker_store.py) against Rasa's own `SQLTrackerStore`:
the same conversation saved through each, on SQLite and on PostgreSQL, stores the same
events and hands the event broker the same ones; every read of a conversation it holds
in memory is the read Rasa's own makes of the database; and both endpoint files load it."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from rasa.core.agent import Agent
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
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity
from sqlalchemy import event as sa_event  # type: ignore[import-untyped]
from sqlalchemy.exc import OperationalError  # type: ignore[import-untyped]

from bot import tracker_store
from bot.settings import PROJECT_ROOT, settings
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


async def test_a_message_is_found_by_its_id_in_any_session_of_its_conversation(
    domain: Domain, database_urls: tuple[str, str]
) -> None:
    """How the SMS channel knows a text's turn is complete (one indexed query)."""
    _, url = database_urls
    store = ParleySQLTrackerStore(domain, host=url)
    try:
        await _converse(store, domain)  # two sessions, no message ids
        tracker = await store.get_or_create_tracker(CONVERSATION)
        tracker.update(UserUttered("first", message_id="SMfirst"))
        await store.save(tracker)
        # A later session: the earlier message is still found.
        tracker.update(SessionStarted())
        tracker.update(UserUttered("second", message_id="SMsecond"))
        await store.save(tracker)
        assert store.has_user_message(CONVERSATION, "SMfirst")
        assert store.has_user_message(CONVERSATION, "SMsecond")
        assert not store.has_user_message(CONVERSATION, "SMthird")
        assert not store.has_user_message("+14155550999", "SMfirst")
        with pytest.raises(ValueError, match="not a message id"):
            store.has_user_message(CONVERSATION, "SM%")
    finally:
        store.engine.dispose()


async def test_a_store_that_fails_fails_the_turn_instead_of_forgetting_the_person(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa's fail-safe reads a conversation it cannot read as a new one and keeps what it
    cannot save in memory; with bot.tracker_store installed both raise."""
    store = ParleySQLTrackerStore(domain, host=f"sqlite:///{tmp_path / 'rasa.db'}")
    tracker = await store.get_or_create_tracker(CONVERSATION)
    await store.save(tracker)
    with store.engine.begin() as connection:  # the database loses its table
        connection.exec_driver_sql("DROP TABLE events")

    assert await Agent(domain=domain, tracker_store=store).tracker_store.retrieve(
        CONVERSATION
    ) is None  # Rasa's own: the person is a stranger now  # fmt: skip

    # Rasa's own is put back after the test.
    monkeypatch.setattr(Agent, "_create_tracker_store", Agent._create_tracker_store)
    tracker_store.install()
    strict = Agent(domain=domain, tracker_store=store).tracker_store
    with pytest.raises(OperationalError):
        await strict.retrieve(CONVERSATION)
    with pytest.raises(OperationalError):
        await strict.save(tracker)
    store.engine.dispose()


async def test_on_sqlite_the_store_keeps_its_connection_and_a_write_ahead_log(
    domain: Domain, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'rasa.db'}"
    store = ParleySQLTrackerStore(domain, host=url)
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        # Durability unchanged: every commit synced (FULL).
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    await _converse(store, domain)
    # Another process's store (Rasa's own here) reads what this one wrote.
    other = SQLTrackerStore(domain, host=url)
    stored = await store.retrieve(CONVERSATION)
    read = await other.retrieve(CONVERSATION)
    assert stored is not None and read is not None
    assert [e.as_dict() for e in read.events] == [e.as_dict() for e in stored.events]
    assert store.engine.pool.checkedin() >= 1  # kept open for the next turn


async def test_a_save_waits_until_the_broker_has_published_what_it_was_handed(
    domain: Domain, tmp_path: Path
) -> None:
    class Confirming(Published):
        """A broker whose events are confirmed only when `published` is awaited."""

        def __init__(self) -> None:
            super().__init__()
            self.confirmed = 0

        async def published(self) -> None:
            self.confirmed = len(self.events)

    broker = Confirming()
    store = ParleySQLTrackerStore(domain, host=f"sqlite:///{tmp_path / 'rasa.db'}")
    store.event_broker = broker
    await _converse(store, domain)
    # Every save returned only once all it had handed over was confirmed.
    assert broker.events and broker.confirmed == len(broker.events)


async def _rasas_read(store: ParleySQLTrackerStore, sender_id: str) -> list[dict[str, Any]] | None:
    """What Rasa's own `SQLTrackerStore.retrieve` reads from the same database."""
    tracker = await SQLTrackerStore.retrieve(store, sender_id)
    return None if tracker is None else _state(tracker)


def _state(tracker: DialogueStateTracker) -> list[dict[str, Any]]:
    return [tracker.current_state(EventVerbosity.ALL)]


async def _read(store: ParleySQLTrackerStore, sender_id: str) -> list[dict[str, Any]] | None:
    tracker = await store.retrieve(sender_id)
    return None if tracker is None else _state(tracker)


class Statements:
    """The SQL statements an engine runs, by their first word."""

    def __init__(self, engine: Any) -> None:
        self.seen: list[str] = []
        sa_event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement.split(None, 1)[0].upper())


async def test_every_read_of_a_held_conversation_is_rasas_own_read(
    domain: Domain, database_urls: tuple[str, str]
) -> None:
    """The held current session is what Rasa would read, after every kind of save: turns,
    a follow-up, a new session, a turn that failed before saving (its tracker changed,
    never saved), an event stamped before the session's start."""
    _, url = database_urls
    store = ParleySQLTrackerStore(domain, host=url)
    try:
        for events in _turns():
            tracker = await store.get_or_create_tracker(CONVERSATION, append_action_listen=False)
            for event in events:
                tracker.update(event, domain)
            await store.save(tracker)
            assert await _read(store, CONVERSATION) == await _rasas_read(store, CONVERSATION)

        # A turn that fails after changing its tracker: nothing of it is read back.
        tracker = await store.get_or_create_tracker(CONVERSATION)
        tracker.update(UserUttered("lost", {"name": "greet", "confidence": 0.9}), domain)
        tracker.update(SlotSet("follow_up", "lost"), domain)
        assert tracker.latest_message is not None
        tracker.latest_message.use_text_for_featurization = True  # Rasa sets this in place
        for event in tracker.events:
            event.timestamp = 0.0
        assert await _read(store, CONVERSATION) == await _rasas_read(store, CONVERSATION)

        # An event stamped before the session started: Rasa's query leaves it out.
        tracker = await store.get_or_create_tracker(CONVERSATION)
        tracker.update(BotUttered("from the past", timestamp=1_700_000_000.0), domain)
        tracker.update(ActionExecuted("action_listen"), domain)
        await store.save(tracker)
        rasas = await _rasas_read(store, CONVERSATION)
        assert await _read(store, CONVERSATION) == rasas
        assert rasas is not None and "from the past" not in str(rasas)

        # A conversation that never was.
        assert await _read(store, "+14155550999") is None
        assert await _rasas_read(store, "+14155550999") is None
    finally:
        store.engine.dispose()


async def test_a_held_conversation_reads_only_its_mark_from_the_database(
    domain: Domain, tmp_path: Path
) -> None:
    store = ParleySQLTrackerStore(domain, host=f"sqlite:///{tmp_path / 'rasa.db'}")
    await _converse(store, domain)
    await store.retrieve(CONVERSATION)
    statements = Statements(store.engine)

    tracker = await store.retrieve(CONVERSATION)
    assert statements.seen == ["SELECT"]  # the mark, however long the session
    assert tracker is not None
    tracker.update(UserUttered("and again", {"name": "greet", "confidence": 0.9}), domain)
    tracker.update(ActionExecuted("utter_greet"), domain)
    statements.seen.clear()
    await store.save(tracker)
    # The mark, the new events in one statement, the mark after them; no count of the
    # session, no read of it.
    assert statements.seen == ["SELECT", "INSERT", "SELECT"]


async def test_a_turn_another_replica_saved_is_read_not_the_held_session(
    domain: Domain, database_urls: tuple[str, str]
) -> None:
    """Two Rasa replicas on one database (the scale profile): each sees what the other
    saved, erased or deleted."""
    _, url = database_urls
    one = ParleySQLTrackerStore(domain, host=url)
    two = ParleySQLTrackerStore(domain, host=url)
    try:
        await _converse(one, domain)
        assert await _read(one, CONVERSATION) is not None  # held by the first
        tracker = await two.get_or_create_tracker(CONVERSATION)
        said = UserUttered("on the second", {"name": "greet"}, timestamp=1_800_000_050.0)
        tracker.update(said, domain)
        await two.save(tracker)
        read = await _read(one, CONVERSATION)
        assert read == await _rasas_read(one, CONVERSATION)
        assert "on the second" in str(read)

        two.delete_older_than(before=1_800_000_012.0, limit=100)
        assert await _read(one, CONVERSATION) == await _rasas_read(one, CONVERSATION)
        assert two.erase(CONVERSATION) > 0
        assert await _read(one, CONVERSATION) is None
    finally:
        one.engine.dispose()
        two.engine.dispose()


async def test_how_many_conversations_are_held_is_bounded(
    domain: Domain, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARLEY_RASA_HELD_CONVERSATIONS", "2")
    settings.cache_clear()
    try:
        store = ParleySQLTrackerStore(domain, host=f"sqlite:///{tmp_path / 'rasa.db'}")
    finally:
        settings.cache_clear()
    for number in range(3):
        sender = f"+1415555010{number}"
        tracker = await store.get_or_create_tracker(sender)
        await store.save(tracker)
        await store.retrieve(sender)
    assert len(store.held) == 2
    # The one dropped is read from the database, the same as ever.
    assert await _read(store, "+14155550100") == await _rasas_read(store, "+14155550100")
    # Erasing a conversation forgets it in memory too.
    store.erase("+14155550100")
    assert "+14155550100" not in store.held
