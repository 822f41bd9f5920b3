"""The backend benchmark of the backend issue: 1,000,000 synthetic people, then segment
counts, membership checks and batch event ingestion over HTTP, on PostgreSQL and on
SQLite side by side; on PostgreSQL each count and the ingestion also beside a bare
reference on the same database (bench/references.py)."""

from __future__ import annotations

import asyncio
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from backend import data_files
from backend.core.database import create_engine, create_session_factory
from backend.core.settings import PROJECT_ROOT
from backend.scoring.rules import ScoringRules
from backend.segments import store as segment_store
from backend.segments.rules import Rule, SegmentDefinition
from bench import loading, references
from bench.synthetic import EPOCH_NOW, Person, people
from tests.servers import free_port

POSTGRES = os.environ.get("PARLEY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 1000
# Clients posting event batches at once (and connections inserting them, for the reference).
CLIENTS = 4


@dataclass
class Measured:
    database: str
    profiles: int = 0
    events_loaded: int = 0
    load_seconds: float = 0.0
    counts: dict[str, tuple[int, float, float]] = field(default_factory=dict)  # n, median, max s
    membership_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # median, p99
    ingest_events_per_s: float = 0.0
    ingest_batch_ms: tuple[float, float] = (0.0, 0.0)  # median, p99
    server_peak_rss_mb: float = 0.0
    # The bare references (PostgreSQL only): hand-written counts (n, median, max s) and a
    # plain multi-row INSERT of the same events.
    reference_counts: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    reference_ingest_events_per_s: float = 0.0
    # PostgreSQL only: the same load into two backend processes.
    ingest_two_events_per_s: float = 0.0
    ingest_two_batch_ms: tuple[float, float] = (0.0, 0.0)  # median, p99
    reference_ingest_batch_ms: tuple[float, float] = (0.0, 0.0)  # median, p99


def segments() -> list[SegmentDefinition]:
    shipped = data_files.load_segments(PROJECT_ROOT / "data")
    compound = SegmentDefinition.model_validate(
        {
            "name": "compound",
            "rule": {
                "all": [
                    {"field": "attributes.plan", "op": "in", "value": ["team", "business"]},
                    {"field": "score", "op": "gte", "value": 10},
                    {"any": [{"consent": "sms"}, {"consent": "email"}]},
                    {"not": {"event": "demo_booked"}},
                ]
            },
        }
    )
    return [*shipped, compound]


async def measure_queries(
    url: str, result: Measured, ids: list[uuid.UUID], reference_dsn: str | None = None
) -> None:
    """Parley's counts and membership checks; with `reference_dsn`, each count also by
    its hand-written query, right after Parley's, on the same database."""
    rules = data_files.load_scoring(PROJECT_ROOT / "data")
    context = rules.context(EPOCH_NOW)
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    plain = await asyncpg.connect(reference_dsn) if reference_dsn else None
    try:
        for segment in segments():
            rule: Rule = segment.rule
            times: list[float] = []
            total = 0
            for _ in range(6):  # the first run warms caches and is not counted
                async with sessions() as session:
                    started = time.perf_counter()
                    total = await segment_store.count(session, rule, context)
                    times.append(time.perf_counter() - started)
            result.counts[segment.name] = (total, statistics.median(times[1:]), max(times[1:]))
            query = references.HAND_WRITTEN.get(segment.name)
            if plain is not None and query is not None:
                result.reference_counts[segment.name] = await references.time_count(
                    plain, query, context
                )
            if segment.name in ("hot-leads", "sms-subscribers", "compound"):
                latencies = []
                async with sessions() as session:
                    for profile_id in ids:
                        started = time.perf_counter()
                        await segment_store.is_member(session, rule, context, profile_id)
                        latencies.append((time.perf_counter() - started) * 1000)
                result.membership_ms[segment.name] = (statistics.median(latencies), p99(latencies))
    finally:
        if plain is not None:
            await plain.close()
        await engine.dispose()


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def event(
    rng: random.Random, types: list[tuple[str, dict[str, str]]], ids: list[uuid.UUID], key: str
) -> dict[str, object]:
    type_, properties = rng.choice(types)
    return {
        "type": type_,
        "properties": properties,
        "profile_id": str(rng.choice(ids)),
        "idempotency_key": key,
    }


async def wait_healthy(client: aiohttp.ClientSession, base: str, tries: int = 300) -> None:
    """Until the backend at `base` answers /health (it is migrating or starting)."""
    for _ in range(tries):
        try:
            async with client.get(f"{base}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)


async def measure_ingestion(
    url: str,
    result: Measured,
    ids: list[uuid.UUID],
    batches: int,
    reference_dsn: str | None = None,
) -> None:
    """Parley's ingestion over HTTP into one backend process; with `reference_dsn`
    (PostgreSQL), then into two (the scale profile runs two API processes), and the same events
    inserted by plain multi-row INSERTs into the same table, same batches, same
    concurrency."""
    rng = random.Random(11)
    types = [("page_viewed", {"path": "/pricing"}), ("page_viewed", {"path": "/blog"}),
             ("trial_started", {}), ("intent_expressed", {"intent": "ask_price"})]  # fmt: skip

    def bodies(run: str) -> list[dict[str, object]]:
        return [
            {"events": [event(rng, types, ids, f"{run}-{b}-{i}") for i in range(BATCH)]}
            for b in range(batches)
        ]

    one = bodies("bench")
    result.ingest_events_per_s, latencies, result.server_peak_rss_mb = await ingest_over_http(
        url, one, processes=1
    )
    result.ingest_batch_ms = (statistics.median(latencies), p99(latencies))
    if reference_dsn:
        two = bodies("bench-two")
        result.ingest_two_events_per_s, latencies, _ = await ingest_over_http(url, two, processes=2)
        result.ingest_two_batch_ms = (statistics.median(latencies), p99(latencies))
        rows = references.event_rows(one, "reference-")
        per_s, batch_ms = await references.insert_events(reference_dsn, rows, CLIENTS)
        result.reference_ingest_events_per_s = per_s
        result.reference_ingest_batch_ms = (statistics.median(batch_ms), p99(batch_ms))


async def ingest_over_http(
    url: str, bodies: list[dict[str, object]], processes: int
) -> tuple[float, list[float], float]:
    """`bodies` posted by CLIENTS clients at once to `processes` `parley backend`
    processes on the database at `url` (the clients taking turns between them, as a load
    balancer would): events a second, each batch's latency (ms), the first process's
    peak memory (MB)."""
    var = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    ports = [free_port() for _ in range(processes)]
    env = {
        **os.environ,
        "PARLEY_DATABASE_URL": url,
        "PARLEY_VAR_DIR": str(var),
        "PARLEY_SECRET_KEY": secrets.token_hex(16),
        "PARLEY_LOG_LEVEL": "warning",
    }
    parley = [sys.executable, "-m", "backend"]
    maker = await asyncio.create_subprocess_exec(
        *parley, "token", "create", "--role", "service", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    token = (await maker.communicate())[0].decode().strip()
    servers = [
        await asyncio.create_subprocess_exec(
            *parley, "backend", env={**env, "PARLEY_BACKEND_PORT": str(port)}
        )
        for port in ports
    ]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    latencies: list[float] = []
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as client:
            for base in bases:
                await wait_healthy(client, base)
            queue = list(bodies)

            async def worker(base: str) -> None:
                while queue:
                    body = queue.pop()
                    started = time.perf_counter()
                    async with client.post(f"{base}/api/v1/events", json=body) as response:
                        assert response.status == 200, await response.text()
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            await asyncio.gather(*(worker(bases[n % processes]) for n in range(CLIENTS)))
            elapsed = time.perf_counter() - started
        return len(bodies) * BATCH / elapsed, latencies, peak_rss_mb(servers[0].pid)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            await asyncio.wait_for(server.wait(), 30)


Loader = Callable[[list[Person], ScoringRules], Awaitable[int]]


async def bench(
    database: str,
    url: str,
    load: Loader,
    count: int,
    batches: int,
    reference_dsn: str | None = None,
) -> Measured:
    """Load `count` people with `load`, then time queries and ingestion on `url`, and
    with `reference_dsn` (the same database) their bare references beside them."""
    result = Measured(database)
    await loading.migrate(url)
    rules = data_files.load_scoring(PROJECT_ROOT / "data")
    population = list(people(count, EPOCH_NOW))
    started = time.perf_counter()
    result.profiles = await load(population, rules)
    await loading.finish_scores(url, rules, EPOCH_NOW)
    result.load_seconds = time.perf_counter() - started
    result.events_loaded = sum(len(p.events) for p in population)
    ids = [p.id for p in random.Random(3).sample(population, 500)]
    del population
    print(f"  loaded in {result.load_seconds:.0f} s; timing queries…", flush=True)
    await measure_queries(url, result, ids, reference_dsn)
    print("  ingesting events over HTTP…", flush=True)
    await measure_ingestion(url, result, ids, batches, reference_dsn)
    return result


async def bench_postgresql(count: int, batches: int) -> Measured:
    name = f"parley_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = POSTGRES.rsplit("/", 1)[0] + f"/{name}"

    async def load(population: list[Person], rules: ScoringRules) -> int:
        return await loading.load_postgresql(dsn, population, rules, EPOCH_NOW)

    try:
        url = dsn.replace("postgresql://", "postgresql+asyncpg://")
        return await bench("PostgreSQL", url, load, count, batches, reference_dsn=dsn)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def bench_sqlite(count: int, batches: int) -> Measured:
    path = Path(tempfile.mkdtemp(prefix="parley-bench-sqlite-")) / "parley.db"

    async def load(population: list[Person], rules: ScoringRules) -> int:
        return loading.load_sqlite(str(path), population, rules, EPOCH_NOW)

    try:
        return await bench("SQLite", f"sqlite+aiosqlite:///{path}", load, count, batches)
    finally:
        path.unlink(missing_ok=True)


def references_table(result: Measured) -> str:
    """Parley's PostgreSQL counts and ingestion beside their bare references."""

    def verdict(met: bool) -> str:
        return "met" if met else "not met"

    lines = [
        "Beside bare references, in the same run on the same PostgreSQL database "
        "(`bench/references.py`). Each count beside the query written by hand for its "
        "segment, in plain asyncpg (EXISTS semi-joins, NOT EXISTS anti-joins, the score "
        "decayed to the same moment), timed the same way right after Parley's; the two "
        "counts must be equal. Ingestion beside the same events inserted into the same "
        f"table by asyncpg's `executemany`, one transaction per batch of {BATCH}, "
        f"{CLIENTS} connections at once, after Parley's run: no HTTP, no validation, no "
        "scoring, enrolment or audit.",
        "",
        "| Measure | Parley | Reference | Parley ÷ reference | Target |",
        "|---|---|---|---|---|",
    ]
    for name, (total, median, worst) in result.counts.items():
        parley = f"{median * 1000:.0f} ms ({worst * 1000:.0f}) → {total:,}"
        found = result.reference_counts.get(name)
        if found is None:
            lines.append(
                f"| count segment `{name}` | {parley} | no hand-written query | — | ≤ 2× |"
            )
            continue
        n, ref_median, ref_worst = found
        same = "" if n == total else " (**differs from Parley's**)"
        lines.append(
            f"| count segment `{name}` | {parley} "
            f"| {ref_median * 1000:.0f} ms ({ref_worst * 1000:.0f}) → {n:,}{same} "
            f"| {references.ratio(median, ref_median)} "
            f"| ≤ 2×: {verdict(median <= 2 * ref_median and n == total)} |"
        )
    ref_rate = result.reference_ingest_events_per_s
    ref_ms = result.reference_ingest_batch_ms
    for label, rate, ms in (
        ("one backend process", result.ingest_events_per_s, result.ingest_batch_ms),
        ("two backend processes", result.ingest_two_events_per_s, result.ingest_two_batch_ms),
    ):
        lines += [
            f"| batch event ingestion, {label} | {rate:,.0f} events/s | {ref_rate:,.0f} events/s "
            f"| {references.ratio(rate, ref_rate)} | ≥ 0.5×: {verdict(rate >= 0.5 * ref_rate)} |",
            f"| one batch of {BATCH}, {label} | {ms[0]:.0f} ms median, {ms[1]:.0f} ms p99 "
            f"| {ref_ms[0]:.0f} ms median, {ref_ms[1]:.0f} ms p99 | | |",
        ]
    return "\n".join(lines)
