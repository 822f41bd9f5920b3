"""Rasa's conversation locks kept in SQLite, so that several Rasa processes on one
machine take turns on a conversation without a Redis server.

Rasa serialises the messages of one conversation with ticket locks: each message draws
a ticket, and waits until every earlier ticket is served or expired. Rasa's own stores
keep the locks in the process's memory (`in_memory`, which is why Rasa refuses a second
Sanic worker with it) or in Redis. Rasa's base class draws a ticket by reading the lock,
changing it and writing it back: between the read and the write another process can
draw the same number. Here every such step (drawing a ticket, finishing one, dropping
expired ones, deleting an unused lock) is one `BEGIN IMMEDIATE` transaction, which
SQLite runs one at a time across every process using the file.

bot/endpoints.yml names it (`lock_store: type: bot.lock_store.SQLiteLockStore`, `path:`
the database file). tests/bot/test_lock_store.py has processes race for the same
conversations and checks that no two ever hold one at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, LockStore
from rasa.utils.endpoints import EndpointConfig

log = logging.getLogger(__name__)

BUSY_SECONDS = 30.0  # how long a step waits for another process's step to finish
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversation_locks (
    conversation_id TEXT PRIMARY KEY,
    lock TEXT NOT NULL
)
"""


class SQLiteLockStore(LockStore):
    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        endpoint_config: EndpointConfig | None = None,
    ) -> None:
        configured = (endpoint_config.kwargs.get("path") if endpoint_config else None) or path
        if not configured:
            raise ValueError("lock_store: give `path`, the SQLite file the locks are kept in")
        self.path = Path(configured)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._transaction() as db:
            db.execute(SCHEMA)

    # ---------------------------------------------------------------- storage

    def _connection(self) -> sqlite3.Connection:
        found: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if found is None:
            # Autocommit: transactions are begun explicitly, IMMEDIATE.
            found = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            found.execute("PRAGMA journal_mode=WAL")
            # A lock outlives no restart of the machine: nothing here needs syncing.
            found.execute("PRAGMA synchronous=OFF")
            self._local.connection = found
        return found

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _atomically(self, conversation_id: str, change: Callable[[TicketLock | None], T]) -> T:
        with self._transaction():
            return change(self.get_lock(conversation_id))

    def get_lock(self, conversation_id: str) -> TicketLock | None:
        row = (
            self._connection()
            .execute(
                "SELECT lock FROM conversation_locks WHERE conversation_id = ?", (conversation_id,)
            )
            .fetchone()
        )
        return TicketLock.from_dict(_loads(row[0])) if row else None

    def save_lock(self, lock: TicketLock) -> None:
        self._connection().execute(
            "INSERT INTO conversation_locks (conversation_id, lock) VALUES (?, ?) "
            "ON CONFLICT (conversation_id) DO UPDATE SET lock = excluded.lock",
            (lock.conversation_id, lock.dumps()),
        )

    def delete_lock(self, conversation_id: str) -> None:
        self._connection().execute(
            "DELETE FROM conversation_locks WHERE conversation_id = ?", (conversation_id,)
        )

    # ---------------------------------------------------------------- Rasa's steps, each atomic

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME) -> int:
        def draw(lock: TicketLock | None) -> int:
            lock = lock or self.create_lock(conversation_id)
            ticket = int(lock.issue_ticket(lock_lifetime))
            self.save_lock(lock)
            return ticket

        try:
            return self._atomically(conversation_id, draw)
        except sqlite3.Error as error:
            raise LockError(f"Error while acquiring lock. Error:\n{error}") from error

    def update_lock(self, conversation_id: str) -> None:
        def drop_expired(lock: TicketLock | None) -> None:
            if lock:
                lock.remove_expired_tickets()
                self.save_lock(lock)

        self._atomically(conversation_id, drop_expired)

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        def finish(lock: TicketLock | None) -> None:
            if lock:
                lock.remove_ticket_for(ticket_number)
                self.save_lock(lock)

        self._atomically(conversation_id, finish)

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        """Finish the ticket, and delete the lock if nobody waits: one step, so that a
        ticket drawn meanwhile by another process is never deleted with it."""

        def finish_and_delete_if_unused(lock: TicketLock | None) -> None:
            if not lock:
                return
            lock.remove_ticket_for(ticket_number)
            if lock.is_someone_waiting():
                self.save_lock(lock)
            else:
                self.delete_lock(conversation_id)

        self._atomically(conversation_id, finish_and_delete_if_unused)


def _loads(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(text)
    return loaded
