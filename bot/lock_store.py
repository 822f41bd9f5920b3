"""Rasa's conversation locks, safe to share between processes: in SQLite, so that
several Rasa processes on one machine take turns on a conversation without a Redis
server, and in Redis for replicas on several machines (the scale profile).

Rasa serialises the messages of one conversation with ticket locks: each message draws
a ticket, and waits until every earlier ticket is served or expired. Rasa's own stores
keep the locks in the process's memory (`in_memory`, which is why Rasa refuses a second
Sanic worker with it) or in Redis. Rasa's base class draws a ticket by reading the lock,
changing it and writing it back: between the read and the write another process can
draw the same number, and Rasa's Redis store inherits that. Here every such step
(drawing a ticket, finishing one, dropping expired ones, deleting an unused lock) is one
atomic change (`AtomicTicketSteps`): a `BEGIN IMMEDIATE` transaction, which SQLite runs
one at a time across every process using the file, or a Redis WATCH/MULTI transaction,
tried again when another process changed the lock in between.

bot/endpoints*.yml name them (`type: bot.lock_store.SQLiteLockStore` with `path:` the
database file; `type: bot.lock_store.AtomicRedisLockStore` with Rasa's Redis settings).
tests/bot/test_lock_store.py has processes race for the same conversations on each and
checks that no two ever hold one at once.
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

import redis
from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, LockError, LockStore, RedisLockStore
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


# One step on a conversation's lock: given the stored lock (None if there is none), what
# to answer and the lock to store afterwards (None: no lock, deleted if there was one).
Step = Callable[[TicketLock | None], tuple[T, TicketLock | None]]


class AtomicTicketSteps(LockStore):
    """Rasa's lock steps, each applied by `_atomically` as one indivisible change."""

    def _atomically(self, conversation_id: str, step: Step[T]) -> T:
        raise NotImplementedError

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME) -> int:
        def draw(lock: TicketLock | None) -> tuple[int, TicketLock | None]:
            lock = lock or self.create_lock(conversation_id)
            return int(lock.issue_ticket(lock_lifetime)), lock

        try:
            return self._atomically(conversation_id, draw)
        except Exception as error:
            raise LockError(f"Error while acquiring lock. Error:\n{error}") from error

    def update_lock(self, conversation_id: str) -> None:
        def drop_expired(lock: TicketLock | None) -> tuple[None, TicketLock | None]:
            if lock:
                lock.remove_expired_tickets()
            return None, lock

        self._atomically(conversation_id, drop_expired)

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        def finish(lock: TicketLock | None) -> tuple[None, TicketLock | None]:
            if lock:
                lock.remove_ticket_for(ticket_number)
            return None, lock

        self._atomically(conversation_id, finish)

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        """Finish the ticket, and delete the lock if nobody waits: one step, so that a
        ticket drawn meanwhile by another process is never deleted with it."""

        def finish_and_delete_if_unused(lock: TicketLock | None) -> tuple[None, TicketLock | None]:
            if not lock:
                return None, None
            lock.remove_ticket_for(ticket_number)
            return None, lock if lock.is_someone_waiting() else None

        self._atomically(conversation_id, finish_and_delete_if_unused)


class SQLiteLockStore(AtomicTicketSteps):
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

    def _atomically(self, conversation_id: str, step: Step[T]) -> T:
        with self._transaction():
            stored = self.get_lock(conversation_id)
            answer, lock = step(stored)
            if lock is not None:
                self.save_lock(lock)
            elif stored is not None:
                self.delete_lock(conversation_id)
            return answer

    def get_lock(self, conversation_id: str) -> TicketLock | None:
        row = (
            self._connection()
            .execute(
                "SELECT lock FROM conversation_locks WHERE conversation_id = ?", (conversation_id,)
            )
            .fetchone()
        )
        return TicketLock.from_dict(json.loads(row[0])) if row else None

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


class AtomicRedisLockStore(AtomicTicketSteps, RedisLockStore):
    """Rasa's Redis lock store (same settings, keys and values) with atomic steps."""

    def __init__(self, endpoint_config: EndpointConfig | None = None, **settings: Any) -> None:
        if endpoint_config is not None:
            settings = {"host": endpoint_config.url, **endpoint_config.kwargs, **settings}
        RedisLockStore.__init__(self, **settings)

    def _atomically(self, conversation_id: str, step: Step[T]) -> T:
        key = self.key_prefix + conversation_id
        with self.red.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    held = pipe.get(key)
                    stored = TicketLock.from_dict(json.loads(held)) if held else None
                    answer, lock = step(stored)
                    pipe.multi()
                    if lock is not None:
                        pipe.set(key, lock.dumps())
                    elif stored is not None:
                        pipe.delete(key)
                    pipe.execute()
                    return answer
                except redis.WatchError:
                    continue  # another process changed the lock: read it again
