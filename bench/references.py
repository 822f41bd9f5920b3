"""The bare references Parley's backend figures are set beside, measured in the same run
on the same PostgreSQL database: the query a person would write by hand for each
benchmark segment's count, a plain multi-row INSERT of the same events, and a bare
`FOR UPDATE SKIP LOCKED` claim-and-mark loop over due steps. Plain asyncpg, no
SQLAlchemy, no rules, no guards: what the database alone does, so that the ratio shows
what Parley's own work costs on top."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from backend.segments.rules import Context

# Profiles that were merged into another are no one's members, so every count skips them.
LIVE = "p.merged_into_id IS NULL"
DEMO_BOOKED = "SELECT 1 FROM events e WHERE e.profile_id = p.id AND e.type = 'demo_booked'"


@dataclass(frozen=True)
class HandWritten:
    """One segment's count as plain SQL, and its parameters at the benchmark's moment."""

    sql: str
    args: Callable[[Context], tuple[Any, ...]]


def _none(_: Context) -> tuple[Any, ...]:
    return ()


# The benchmark's segments (data/segments/*.yml and bench.backend's `compound`), each
# written the obvious way: semi-joins with EXISTS, anti-joins with NOT EXISTS, the score
# decayed to the moment as the scoring rules do. The counts are compared with Parley's,
# so a segment file that changes without this changing shows up as a difference.
HAND_WRITTEN: dict[str, HandWritten] = {
    "big-teams": HandWritten(
        f"SELECT count(*) FROM profiles p WHERE {LIVE} "
        "AND (p.attributes ->> 'team_size')::numeric >= 50",
        _none,
    ),
    "hot-leads": HandWritten(
        f"SELECT count(*) FROM profiles p WHERE {LIVE} "
        "AND p.score_events * $1 + p.score_attributes >= 60 "
        f"AND NOT EXISTS ({DEMO_BOOKED} AND e.occurred_at >= $2)",
        lambda c: (c.score_factor, c.now - timedelta(days=30)),
    ),
    "quiet-trials": HandWritten(
        f"SELECT count(*) FROM profiles p WHERE {LIVE} "
        "AND EXISTS (SELECT 1 FROM events e WHERE e.profile_id = p.id "
        "AND e.type = 'trial_started' AND e.occurred_at >= $1) "
        f"AND NOT EXISTS ({DEMO_BOOKED})",
        lambda c: (c.now - timedelta(days=14),),
    ),
    "sms-subscribers": HandWritten(
        f"SELECT count(*) FROM profiles p WHERE {LIVE} "
        "AND EXISTS (SELECT 1 FROM consent_states c WHERE c.profile_id = p.id "
        "AND c.channel = 'sms' AND c.purpose = 'marketing' AND c.state = 'granted')",
        _none,
    ),
    "compound": HandWritten(
        f"SELECT count(*) FROM profiles p WHERE {LIVE} "
        "AND p.attributes ->> 'plan' IN ('team', 'business') "
        "AND p.score_events * $1 + p.score_attributes >= 10 "
        "AND EXISTS (SELECT 1 FROM consent_states c WHERE c.profile_id = p.id "
        "AND c.channel IN ('sms', 'email') AND c.purpose = 'marketing' AND c.state = 'granted') "
        f"AND NOT EXISTS ({DEMO_BOOKED})",
        lambda c: (c.score_factor,),
    ),
}


async def time_count(
    connection: asyncpg.Connection, query: HandWritten, context: Context, runs: int = 6
) -> tuple[int, float, float]:
    """The count, and the median and worst time of `runs` - 1 runs after a warm-up, as
    Parley's counts are timed."""
    times: list[float] = []
    total = 0
    for _ in range(runs):
        started = time.perf_counter()
        total = int(await connection.fetchval(query.sql, *query.args(context)))
        times.append(time.perf_counter() - started)
    return total, statistics.median(times[1:]), max(times[1:])


INSERT_EVENT = (
    "INSERT INTO events (profile_id, type, properties, occurred_at, received_at, "
    "idempotency_key) VALUES ($1, $2, $3::jsonb, $4, $5, $6)"
)


async def insert_events(
    dsn: str, batches: Sequence[Sequence[tuple[Any, ...]]], concurrency: int
) -> tuple[float, list[float]]:
    """Each batch as one transaction of a multi-row INSERT (asyncpg's executemany), from
    `concurrency` connections at once: the events per second, and each batch's ms."""
    queue = list(batches)
    latencies: list[float] = []

    async def client(connection: asyncpg.Connection) -> None:
        while queue:
            batch = queue.pop()
            started = time.perf_counter()
            async with connection.transaction():
                await connection.executemany(INSERT_EVENT, batch)
            latencies.append((time.perf_counter() - started) * 1000)

    # Connected first: a server's pool is open before its clients' requests come.
    connections = [await asyncpg.connect(dsn) for _ in range(concurrency)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return sum(len(b) for b in batches) / elapsed, latencies


def event_rows(bodies: Sequence[dict[str, Any]], prefix: str) -> list[list[tuple[Any, ...]]]:
    """The events of the API's request bodies as rows of the events table, stored as the
    API stores them (received and occurred now); their keys under `prefix`, so they do
    not collide with the same events stored through the API."""
    now = datetime.now(UTC)

    def row(event: dict[str, Any]) -> tuple[Any, ...]:
        key = f"{prefix}{event['idempotency_key']}"
        properties = json.dumps(event["properties"])
        return (uuid.UUID(event["profile_id"]), event["type"], properties, now, now, key)

    return [[row(event) for event in body["events"]] for body in bodies]


CLAIM = (
    "SELECT id FROM sequence_work WHERE done_at IS NULL AND due_at <= now() "
    "ORDER BY due_at, id LIMIT $1 FOR UPDATE SKIP LOCKED"
)
MARK = "UPDATE sequence_work SET done_at = now(), outcome = 'sent' WHERE id = ANY($1::bigint[])"


async def claim_and_mark(dsn: str, loops: int, batch: int) -> tuple[int, float]:
    """Claim due steps `batch` at a time with `FOR UPDATE SKIP LOCKED` and mark them done
    in the same transaction, from `loops` connections at once, until none is left: how
    many, and how many a second."""
    claimed = 0

    async def loop(connection: asyncpg.Connection) -> None:
        nonlocal claimed
        while True:
            async with connection.transaction():
                ids = [row["id"] for row in await connection.fetch(CLAIM, batch)]
                if ids:
                    await connection.execute(MARK, ids)
            if not ids:
                return
            claimed += len(ids)

    # Connected first, as the workers' pools are before the steps fall due.
    connections = [await asyncpg.connect(dsn) for _ in range(loops)]
    try:
        started = time.perf_counter()
        await asyncio.gather(*(loop(c) for c in connections))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return claimed, claimed / elapsed


def ratio(parley: float, reference: float) -> str:
    return f"{parley / reference:.2f}×" if reference else "—"
