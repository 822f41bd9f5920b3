"""Erasing a conversation from Rasa's tracker store and deleting what is older than the
retention period (channels/conversation_batch.py, bot/tracker_store.py), on a real
Sanic server with Parley's SQL tracker store on SQLite and on PostgreSQL. After each,
the store's own `events` table is read directly: this is the contract the backend's
erasure and retention job rely on (docs/privacy.md)."""

from __future__ import annotations

import itertools
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import psycopg2
import pytest
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.tracker_store import FailSafeTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered
from sanic import Sanic

from bot.settings import PROJECT_ROOT
from bot.tracker_store import ParleySQLTrackerStore
from channels.conversation_batch import ConversationBatchInput
from tests.bot.conftest import serving
from tests.servers import POSTGRES_DSN, server_missing

TOKEN = "conversation-privacy-test-token"
PERSON = "+14155550123"  # an SMS conversation
VISITOR = "chat-7f3a"  # a web chat conversation
OTHER = "+14155550199"
_apps = itertools.count()
# Each conversation's events are stamped a minute apart from this Unix time on.
START = 1_800_000_000.0


@dataclass
class Store:
    url: str

    def rows(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """The tracker store's own table, read directly."""
        if self.url.startswith("sqlite"):
            connection = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                return list(connection.execute(query.replace("%s", "?"), args))
            finally:
                connection.close()
        connection = psycopg2.connect(self.url)
        try:
            cursor = connection.cursor()
            cursor.execute(query, args)
            return list(cursor.fetchall())
        finally:
            connection.close()


@dataclass
class Rasa:
    domain: Domain
    tracker_store: FailSafeTrackerStore
    lock_store: InMemoryLockStore

    def is_ready(self) -> bool:
        return True


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rasa.db'}"
        return
    try:
        admin = psycopg2.connect(POSTGRES_DSN, connect_timeout=5)
    except psycopg2.OperationalError as error:
        server_missing(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {error}")
    admin.autocommit = True
    name = f"parley_privacy_{secrets.token_hex(6)}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"{POSTGRES_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@dataclass
class Endpoint:
    url: str
    store: Store
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, f"{self.url}{path}", json=body, headers=headers
        ) as response:
            return response.status, await response.json(content_type=None)


async def _converse(store: ParleySQLTrackerStore, domain: Domain, sender: str, at: float) -> None:
    """A conversation of ten events, one a minute from `at`, saved as Rasa saves one."""
    stamps = iter(at + 60 * n for n in range(10))
    intent = {"name": "greet", "confidence": 0.9}
    tracker = await store.get_or_create_tracker(sender, append_action_listen=False)
    for event in [
        ActionExecuted("action_session_start", timestamp=next(stamps)),
        SessionStarted(timestamp=next(stamps)),
        ActionExecuted("action_listen", timestamp=next(stamps)),
        *[
            e
            for text in ("hi", "my number is +14155550123")
            for e in (
                UserUttered(text, intent, timestamp=next(stamps)),
                ActionExecuted("utter_greet", timestamp=next(stamps)),
                BotUttered("Hello! Ada, is it?", timestamp=next(stamps)),
            )
        ],
        ActionExecuted("action_listen", timestamp=next(stamps)),
    ]:
        tracker.update(event, domain)
    await store.save(tracker)


@pytest.fixture
async def endpoint(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Endpoint]:
    monkeypatch.setattr(Sanic, "test_mode", True)
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    store = ParleySQLTrackerStore(domain, host=database_url)
    for n, sender in enumerate((PERSON, VISITOR, OTHER)):
        await _converse(store, domain, sender, START + 3600 * n)
    app = Sanic(f"conversation_privacy_test_{next(_apps)}")
    app.ctx.agent = Rasa(domain, FailSafeTrackerStore(store), InMemoryLockStore())
    async with (
        serving(app, [ConversationBatchInput(TOKEN)]) as base,
        aiohttp.ClientSession() as session,
    ):
        yield Endpoint(f"{base}/webhooks/conversations", Store(database_url), session)


def senders(store: Store) -> dict[str, int]:
    return dict(store.rows("SELECT sender_id, COUNT(*) FROM events GROUP BY sender_id"))


async def test_erasing_a_conversation_leaves_nothing_of_it_in_the_store(
    endpoint: Endpoint,
) -> None:
    assert senders(endpoint.store) == {PERSON: 10, VISITOR: 10, OTHER: 10}
    status, answer = await endpoint.call("DELETE", f"/{quote(PERSON, safe='')}")
    assert (status, answer) == (200, {"erased": 10})
    status, answer = await endpoint.call("DELETE", f"/{VISITOR}")
    assert (status, answer) == (200, {"erased": 10})

    assert senders(endpoint.store) == {OTHER: 10}
    for text in ("+14155550123", "Ada", "my number"):
        found = endpoint.store.rows(
            "SELECT COUNT(*) FROM events WHERE sender_id <> %s AND data LIKE %s",
            OTHER,
            f"%{text}%",
        )
        assert found == [(0,)]
    # Erasing again finds nothing, and says so.
    assert await endpoint.call("DELETE", f"/{VISITOR}") == (200, {"erased": 0})
    status, read = await endpoint.call("GET", f"/{VISITOR}/tracker")
    assert (status, read["events"]) == (200, [])


async def test_retention_deletes_only_what_is_older_a_small_batch_at_a_time(
    endpoint: Endpoint,
) -> None:
    # PERSON's conversation is from START; VISITOR's an hour later; OTHER's two hours.
    cutoff = START + 3600 + 5 * 60  # in the middle of VISITOR's conversation
    rounds, deleted, more = 0, 0, True
    while more:
        status, answer = await endpoint.call("POST", "/retention", {"before": cutoff, "limit": 4})
        assert status == 200 and answer["deleted"] <= 4
        rounds, deleted, more = rounds + 1, deleted + answer["deleted"], answer["more"]
    assert (deleted, rounds) == (15, 4)
    [(oldest,)] = endpoint.store.rows("SELECT MIN(timestamp) FROM events")
    assert oldest >= cutoff
    assert senders(endpoint.store) == {VISITOR: 5, OTHER: 10}
    assert await endpoint.call("POST", "/retention", {"before": cutoff, "limit": 4}) == (
        200,
        {"deleted": 0, "more": False},
    )


@pytest.mark.parametrize(
    "body",
    [None, [], {"before": "yesterday", "limit": 10}, {"before": START, "limit": 0},
     {"before": START, "limit": 5001}, {"before": True, "limit": 10}],
)  # fmt: skip
async def test_a_retention_request_that_is_not_one_is_refused_and_deletes_nothing(
    endpoint: Endpoint, body: Any
) -> None:
    status, answer = await endpoint.call("POST", "/retention", body)
    assert status == 400 and "before" in answer["title"]
    assert senders(endpoint.store) == {PERSON: 10, VISITOR: 10, OTHER: 10}


async def test_without_rasas_token_nothing_is_erased_or_deleted(endpoint: Endpoint) -> None:
    for token in (None, "wrong"):
        status, _ = await endpoint.call("DELETE", f"/{VISITOR}", token=token)
        assert status == 401
        status, _ = await endpoint.call(
            "POST", "/retention", {"before": START + 10**6, "limit": 100}, token=token
        )
        assert status == 401
    assert senders(endpoint.store) == {PERSON: 10, VISITOR: 10, OTHER: 10}
