"""What reading and saving a conversation costs Rasa on every turn: its own
`SQLTrackerStore` against Parley's (bot/tracker_store.py), on SQLite and PostgreSQL,
for conversations with 1, 10 and 50 earlier turns in their session. Each measured turn
reads the conversation, adds a follow-up (four events) and saves it, with an event
broker configured, as the bot's batch endpoint does; the conversation was saved by the
turn before it in the same process (as in a chat, where one turn follows another), and
each conversation is measured once, so every turn meets the same length.

It runs in the bot runtime (`.venv-bot/bin/python -m bench.tracker_saves POSTGRES_DSN`),
where Rasa is; `make bench` starts it and prints the table it writes to stdout.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
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

TURNS = (1, 10, 50)
SAVES = 100  # conversations per store, database and length: the median is reported
STORES = {"Rasa's `SQLTrackerStore`": SQLTrackerStore, "Parley's": ParleySQLTrackerStore}


class Discarded(EventBroker):  # type: ignore[misc]
    """A broker that drops what it is given: the stores' own work is measured."""

    def publish(self, event: dict[str, Any]) -> None:
        pass


class Clock:
    """Increasing event timestamps (a session is found by its start's timestamp)."""

    def __init__(self) -> None:
        self.at = 1_800_000_000.0

    def __call__(self) -> float:
        self.at += 0.01
        return self.at


async def median_turn_ms(store: SQLTrackerStore, domain: Domain, turns: int, name: str) -> float:
    """The median time to read each of SAVES conversations that have `turns` earlier
    turns in their session and save a follow-up into it."""
    at = Clock()
    intent = {"name": "greet", "confidence": 0.98}
    earlier: list[Event] = [
        ActionExecuted("action_session_start", timestamp=at()),
        SessionStarted(timestamp=at()),
        ActionExecuted("action_listen", timestamp=at()),
    ]
    for _ in range(turns):
        earlier += [
            UserUttered("hi", intent, parse_data={"intent": intent, "text": "hi"},
                        timestamp=at()),
            ActionExecuted("utter_greet", timestamp=at()),
            BotUttered("Hi! What's your name?", timestamp=at()),
            ActionExecuted("action_listen", timestamp=at()),
        ]  # fmt: skip
    took = []
    for n in range(SAVES):
        conversation = f"{name}-{n}"
        tracker = await store.get_or_create_tracker(conversation, append_action_listen=False)
        for event in earlier:
            tracker.update(event, domain)
        await store.save(tracker)
        started = time.perf_counter()
        tracker = await store.get_or_create_tracker(conversation, append_action_listen=False)
        for event in (
            ActionExecuted("action_follow_up", timestamp=at()),
            BotUttered("Want a walkthrough? Reply YES.", timestamp=at()),
            SlotSet("follow_up", "demo", timestamp=at()),
            ActionExecuted("action_listen", timestamp=at()),
        ):
            tracker.update(event, domain)
        await store.save(tracker)
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took)


@contextmanager
def postgres_database(dsn: str) -> Iterator[str]:
    name = f"parley_bench_tracker_{secrets.token_hex(4)}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


async def measure(postgres: str) -> dict[tuple[str, str, int], float]:
    domain = Domain.load(str(PROJECT_ROOT / "bot" / "domain"))
    found: dict[tuple[str, str, int], float] = {}
    with tempfile.TemporaryDirectory() as folder, postgres_database(postgres) as pg_url:
        urls = {"SQLite": f"sqlite:///{folder}/rasa.db", "PostgreSQL": pg_url}
        for database, url in urls.items():
            for label, kind in STORES.items():
                store = kind(domain, host=url, event_broker=Discarded())
                try:
                    for turns in TURNS:
                        found[(database, label, turns)] = await median_turn_ms(
                            store, domain, turns, f"{label}-{turns}"
                        )
                finally:
                    store.engine.dispose()
    return found


def table(found: dict[tuple[str, str, int], float]) -> str:
    columns = [(database, label) for database in ("SQLite", "PostgreSQL") for label in STORES]
    lines = [
        "| earlier turns in the session | "
        + " | ".join(f"{label}, {database}" for database, label in columns)
        + " |",
        "|---|" + "---|" * len(columns),
    ]
    for turns in TURNS:
        cells = [f"{found[(database, label, turns)]:.2f} ms" for database, label in columns]
        lines.append(f"| {turns} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(asyncio.run(measure(sys.argv[1]))))
