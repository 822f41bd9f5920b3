"""The console's pages on the 1,000,000-profile database (PostgreSQL), as a signed-in
person's browser asks for them, from a separate `parley backend` process: the people
search (a first name many share, an e-mail address, a phone number), a profile page,
the conversations list and the overview of a month. Target: each under 300 ms.

The population is bench.synthetic's, with conversations added: a fifth of the people
wrote 1 to 6 messages in the month before the synthetic "now", each an intent_expressed
event with its channel and conversation (as Rasa's events are recorded)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import data_files
from backend.conversations import rollups
from backend.core.database import create_engine, create_session_factory
from backend.core.settings import PROJECT_ROOT
from bench import loading
from bench.backend import POSTGRES, wait_healthy
from bench.synthetic import EPOCH_NOW, as_json, people
from tests.servers import free_port

INTENTS = ["greet", "ask_price", "faq/free_trial", "request_demo", "nlu_fallback", "goodbye"]
PASSWORD = secrets.token_urlsafe(16)  # a throw-away account on a throw-away database
WARM_UP, TIMED = 3, 25
TARGET_MS = 300.0
ROLLUP_TABLES = [
    "conversation_rollups", "conversation_intent_rollups", "conversation_day_rollups",
    "daily_channel_rollups", "daily_intent_rollups",
]  # fmt: skip


@dataclass
class Timed:
    page: str
    path: str
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class ConsoleMeasured:
    profiles: int = 0
    conversations: int = 0
    messages: int = 0
    load_seconds: float = 0.0
    rollup_seconds: float = 0.0  # adding the month's messages to the roll-ups
    pages: list[Timed] = field(default_factory=list)


async def add_conversations(
    dsn: str, ids: Sequence[tuple[object, str, str]]
) -> tuple[int, list[tuple[Any, ...]]]:
    """Messages for a fifth of the people: (profile id, identity kind, address)."""
    rng = random.Random(5)
    records = []
    conversations = 0
    for profile_id, kind, address in ids:
        if rng.random() >= 0.2:
            continue
        conversations += 1
        channel = "sms" if kind == "sms" else rng.choice(["webchat", "webchat", "rest"])
        start = EPOCH_NOW - timedelta(days=rng.uniform(0, 30))
        for n in range(rng.randint(1, 6)):
            at = start + timedelta(seconds=20 * n)
            properties = {"intent": rng.choice(INTENTS), "channel": channel,
                          "conversation": address}  # fmt: skip
            records.append((profile_id, "intent_expressed", as_json(properties), at, at))
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "events", columns=["profile_id", "type", "properties", "occurred_at", "received_at"],
            records=records,
        )  # fmt: skip
        await connection.execute("VACUUM ANALYZE events")
    finally:
        await connection.close()
    return conversations, records


async def roll_up(url: str, records: Sequence[tuple[Any, ...]]) -> float:
    """Add the messages to the conversations' roll-ups as recording does (COPY went
    around it), in batches of recording's size; the seconds it took."""
    engine = create_engine(url)
    started = time.perf_counter()
    try:
        sessions = create_session_factory(engine)
        for n, chunk in enumerate(loading.chunks(records, 500)):
            if n in (20, 200) or n % 400 == 0:
                # What autovacuum does after a load, here while it is busy with the load's
                # big tables: without statistics the foreign keys' checks, planned when
                # the roll-ups were empty, scan them whole.
                await analyze(engine)
                print(f"  rolled up {n * 500:,} messages in {time.perf_counter() - started:.0f} s",
                      flush=True)  # fmt: skip
            async with sessions.begin() as session:
                await rollups.add(
                    session,
                    (
                        found
                        for profile_id, type_, properties, at, _ in chunk
                        if (found := rollups.said(profile_id, type_, json.loads(properties), at))
                    ),
                )
        elapsed = time.perf_counter() - started
        # As after the load's COPY: vacuumed and analyzed before the pages are timed, so
        # that autovacuum's pass over the new rows does not run beside them.
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for table in ROLLUP_TABLES:
                await connection.execute(text(f"VACUUM ANALYZE {table}"))
    finally:
        await engine.dispose()
    return elapsed


async def analyze(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        for table in ROLLUP_TABLES:
            await connection.execute(text(f"ANALYZE {table}"))


async def bench_console(count: int) -> ConsoleMeasured:
    result = ConsoleMeasured()
    name = f"parley_bench_console_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    try:
        await loading.migrate(url)
        rules = data_files.load_scoring(PROJECT_ROOT / "data")
        population = list(people(count, EPOCH_NOW))
        started = time.perf_counter()
        result.profiles = await loading.load_postgresql(dsn, population, rules, EPOCH_NOW)
        await loading.finish_scores(url, rules, EPOCH_NOW)
        identities = [(p.id, *p.identity) for p in population]
        sample = random.Random(9).sample(population, 20)
        del population
        result.conversations, messages = await add_conversations(dsn, identities)
        result.messages = len(messages)
        result.load_seconds = time.perf_counter() - started
        result.rollup_seconds = await roll_up(url, messages)
        del messages
        print(
            f"  loaded in {result.load_seconds:.0f} s, rolled up in {result.rollup_seconds:.0f} s;"
            " timing pages…", flush=True,
        )  # fmt: skip
        phone = next(p.identity[1] for p in sample if p.identity[0] == "sms")
        email = next(p.email for p in sample if p.email)
        since, until = (EPOCH_NOW - timedelta(days=30)).date(), EPOCH_NOW.date()
        period = f"since={since.isoformat()}&until={until.isoformat()}"
        result.pages = [
            Timed("people search: a first name (10 % of everyone)", "/console/people?query=ada"),
            Timed("people search: an e-mail address", f"/console/people?query={email}"),
            Timed("people search: a phone number", f"/console/people?query={phone}"),
            Timed("a profile page", f"/console/people/{sample[0].id}"),
            Timed("conversations, a month", f"/console/conversations?{period}"),
            Timed("overview, a month", f"/console/overview?{period}"),
        ]
        await _time_pages(url, result.pages)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    return result


async def _time_pages(url: str, pages: list[Timed]) -> None:
    var = Path(tempfile.mkdtemp(prefix="parley-bench-console-"))
    port = free_port()
    env = {
        **os.environ, "PARLEY_DATABASE_URL": url, "PARLEY_VAR_DIR": str(var),
        "PARLEY_BACKEND_PORT": str(port), "PARLEY_SECRET_KEY": secrets.token_hex(16),
        "PARLEY_LOG_LEVEL": "warning",
    }  # fmt: skip
    parley = [sys.executable, "-m", "backend"]
    maker = await asyncio.create_subprocess_exec(
        *parley, "user", "create", "--email", "bench@example.com", "--role", "admin",
        "--password-stdin", env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await maker.communicate((PASSWORD + "\n").encode())
    server = await asyncio.create_subprocess_exec(*parley, "backend", env=env)
    base = f"http://127.0.0.1:{port}"
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
    try:
        async with aiohttp.ClientSession(cookie_jar=jar) as client:
            await wait_healthy(client, base)
            async with client.get(f"{base}/console/sign-in") as response:
                found = re.search(r'name="csrf" value="([^"]+)"', await response.text())
                assert found, "no CSRF token on the sign-in page"
            form = {"csrf": found.group(1), "email": "bench@example.com", "password": PASSWORD}
            async with client.post(f"{base}/console/sign-in", data=form) as response:
                assert response.status == 200, response.status  # followed to the overview
            for page in pages:
                for n in range(WARM_UP + TIMED):
                    started = time.perf_counter()
                    async with client.get(base + page.path) as response:
                        await response.read()
                        assert response.status == 200, (page.path, response.status)
                    if n >= WARM_UP:
                        page.samples_ms.append((time.perf_counter() - started) * 1000)
                print(
                    f"  {page.page}: p50 {page.p50:.0f} ms, p95 {page.p95:.0f} ms "
                    f"(each: {', '.join(f'{t:.0f}' for t in page.samples_ms)})", flush=True,
                )  # fmt: skip
    finally:
        server.terminate()
        await server.wait()


def console_table(result: ConsoleMeasured, machine_line: str) -> str:
    rows = "\n".join(
        f"| {p.page} | {p.p50:.0f} ms | {p.p95:.0f} ms | {'yes' if p.p95 < TARGET_MS else 'no'} |"
        for p in result.pages
    )
    return f"""## The console's pages over 1,000,000 profiles (PostgreSQL)

{machine_line}

{result.profiles:,} profiles (bench.synthetic's population: names, e-mail addresses,
phone numbers, events, consent) and {result.conversations:,} conversations of
{result.messages:,} messages in the month before the synthetic "now". A signed-in
admin's requests, one at a time, to a separate `parley backend` process; {TIMED} timed
requests per page after {WARM_UP} unmeasured ones. Loading took
{result.load_seconds:.0f} s. Target: each page under {TARGET_MS:.0f} ms (the p95 here).

| page | p50 | p95 | under {TARGET_MS:.0f} ms |
|---|---|---|---|
{rows}

How they are answered: the people search and the profile page from indexes (migration
0014's prefix indexes, the events' per-profile index); the conversations list and the
overview from the conversations' roll-ups (backend/conversations/rollups.py, migration
0016), kept as each message is recorded, so that the list reads a page of rows from the
index on the last message and the overview sums a few hundred daily counts instead of
grouping a month's {result.messages:,} messages on every request. What the roll-ups
cost recording: the month's messages, added through `rollups.add` in batches of 500
after they were loaded, took {result.rollup_seconds:.0f} s
({result.messages / max(result.rollup_seconds, 1e-9):,.0f} messages/s on one connection).
"""
