"""The backend's database: one async engine and session factory per process.

SQLite (the embedded default) and PostgreSQL (scale) run the same code. SQLite gets
WAL, a busy timeout and enforced foreign keys so that it behaves like a server, and one
connection per process: SQLite has one writer, so the process's transactions take
turns for that connection instead of each meeting a locked database on a connection of
its own and sleeping in SQLite's busy handler (1, 2, 5 … 100 ms at a time). Under a
burst of texts with the bot's turns going on, that took the acknowledgement of a text
from seconds to milliseconds (docs/benchmarks.md). Other processes on the same file
(`parley` commands) still meet the busy timeout.

The turns are handed out by `TurnTakingQueue`: the connection goes straight to the
next in line, and a transaction someone outside waits for (`first_in_line`: the record
of a text Twilio waits for) goes before the others. SQLAlchemy's own asyncio queue lets
a newcomer take a connection just given back while the waiter it woke goes to the end
of the line again, so under load a transaction could wait for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, exc, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry
from sqlalchemy.util import await_
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty, Full

from backend.core.bulk import on_postgresql

# A pooled connection idle this long is pinged before it is lent out again. A connection
# in steady use is not: SQLAlchemy's pre-ping costs three round trips per checkout (its
# asyncpg ping is BEGIN, a statement, ROLLBACK), about 7 % of a busy scheduler worker's
# CPU, and a server restart takes longer than this, so a connection that outlived one
# has been idle at least this long.
PING_IDLE_AFTER = 1.0


def create_engine(url: str, ping_idle_after: float = PING_IDLE_AFTER) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, poolclass=TurnTakingPool,
            pool_size=1, max_overflow=0, pool_timeout=60,
        )  # fmt: skip
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # PostgreSQL's JIT compiler spends hundreds of milliseconds compiling queries whose
    # estimated cost looks high (a segment count with subqueries) and then run in tens.
    engine = create_async_engine(url, connect_args={"server_settings": {"jit": "off"}})
    _ping_when_idle(engine, ping_idle_after)
    return engine


# PostgreSQL error classes that say the database cannot be used now, not that a
# message is wrong: connection (08), resources (53), shut down (57), system (58).
UNAVAILABLE_CLASSES = frozenset({"08", "53", "57", "58"})
UNAVAILABLE_STATES = frozenset(
    {
        "55000",  # the database does not allow connections now
        "55006",  # object in use
        "3D000",  # no such database (yet)
        "28000", "28P01",  # refused login
        "42P01",  # no such table: the migrations are not applied yet
        "25006",  # read-only (a standby)
        "40001", "40P01",  # serialisation failure, deadlock: try again
    }
)  # fmt: skip


def database_unavailable(error: BaseException) -> bool:
    """Whether the error says the database cannot be used now (down, restarting,
    unreachable, not migrated yet), rather than that what was written is wrong."""
    todo: list[BaseException] = [error]
    seen: set[int] = set()
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(
            current,
            (
                OSError, TimeoutError, exc.OperationalError, exc.InterfaceError,
                exc.TimeoutError, exc.DisconnectionError,
                asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            ),
        ):  # fmt: skip
            return True
        if isinstance(current, exc.DBAPIError) and current.connection_invalidated:
            return True
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and (
            state[:2] in UNAVAILABLE_CLASSES or state in UNAVAILABLE_STATES
        ):
            return True
        for cause in (getattr(current, "orig", None), current.__cause__):
            if isinstance(cause, BaseException):
                todo.append(cause)
    return False


_FIRST_IN_LINE: ContextVar[bool] = ContextVar("first_in_line", default=False)


@contextlib.contextmanager
def first_in_line() -> Iterator[None]:
    """Transactions begun in this block get SQLite's connection before the others
    waiting for it (no effect on PostgreSQL, where each has a connection)."""
    token = _FIRST_IN_LINE.set(True)
    try:
        yield
    finally:
        _FIRST_IN_LINE.reset(token)


class TurnTakingQueue(AsyncAdaptedQueue[ConnectionPoolEntry]):
    """The pool's connections, handed straight to the next in line: those waiting
    `first_in_line`, then the others, each line in order of arrival."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._free: deque[ConnectionPoolEntry] = deque()
        self._first: deque[asyncio.Future[ConnectionPoolEntry]] = deque()
        self._rest: deque[asyncio.Future[ConnectionPoolEntry]] = deque()

    def empty(self) -> bool:
        return not self._free

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._free)

    def qsize(self) -> int:
        return len(self._free)

    def put_nowait(self, item: ConnectionPoolEntry) -> None:
        for line in (self._first, self._rest):
            while line:
                waiter = line.popleft()
                if not waiter.done():
                    waiter.set_result(item)
                    return
        if self.full():
            raise Full()
        self._free.append(item)

    def put(
        self, item: ConnectionPoolEntry, block: bool = True, timeout: float | None = None
    ) -> None:
        self.put_nowait(item)  # the pool gives back only what it took: never full

    def get_nowait(self) -> ConnectionPoolEntry:
        if not self._free:
            raise Empty()
        return self._free.popleft()

    def get(self, block: bool = True, timeout: float | None = None) -> ConnectionPoolEntry:
        if self._free or not block:
            return self.get_nowait()  # nobody waits while a connection is free
        return await_(self._wait(timeout))

    async def _wait(self, timeout: float | None) -> ConnectionPoolEntry:
        waiter: asyncio.Future[ConnectionPoolEntry] = asyncio.get_running_loop().create_future()
        (self._first if _FIRST_IN_LINE.get() else self._rest).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as error:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over as we gave up: pass it on
            waiter.cancel()
            if isinstance(error, TimeoutError):
                raise Empty() from error
            raise


class TurnTakingPool(AsyncAdaptedQueuePool):
    _queue_class = TurnTakingQueue


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    """Ping a pooled connection on checkout if it was idle `after` seconds or more; a
    dead one makes the pool drop every connection older than now and connect afresh
    (SQLAlchemy's own pre-ping does the same, on every checkout). A statement that
    meets a connection that died in use fails as it would anyway, and the pool is
    renewed then too."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < after:
            return  # just connected, or in steady use
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.InvalidatePoolError() from error


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


# Any fixed number: the name of the startup lock among PostgreSQL's advisory locks.
STARTUP_LOCK = 7_370_016


async def one_starting_at_a_time(session: AsyncSession) -> None:
    """Until `session`'s transaction ends, other processes calling this on the same
    PostgreSQL database wait. For what each process does once as it starts (rescoring
    after the rules changed, syncing segment files): processes started together would
    each find it undone, and the second fail on the rows the first wrote. On SQLite
    (the embedded default) one backend process runs."""
    if on_postgresql(session):
        await session.execute(select(func.pg_advisory_xact_lock(STARTUP_LOCK)))
