"""Loading synthetic people into a fresh database, the fastest way each one allows:
COPY on PostgreSQL, batched inserts in one transaction on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import Any

import asyncpg
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import insert

from backend.core import migrations_runner
from backend.core.database import create_engine, create_session_factory
from backend.core.models import ConsentState, Event, Identity, Profile
from backend.scoring import rules as scoring
from backend.scoring.rules import ScoringRules
from bench.synthetic import Person, as_json, score


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


async def migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrations_runner.upgrade(engine)
    finally:
        await engine.dispose()


def rows(
    people: Iterable[Person], rules: ScoringRules, now: datetime
) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {
        "profiles": [],
        "identities": [],
        "events": [],
        "consent_states": [],
    }
    for p in people:
        tables["profiles"].append(
            (p.id, p.first_name, p.email, p.company, p.attributes, score(p, rules), p.created_at)
        )
        tables["identities"].append(
            (uuid.uuid4(), p.id, p.identity[0], p.identity[1], p.created_at)
        )
        for type_, properties, at in p.events:
            tables["events"].append((p.id, type_, properties, at, at))
        for channel, purpose, state in p.consent:
            tables["consent_states"].append((p.id, channel, purpose, state, now))
    return tables


async def load_postgresql(
    dsn: str, people: Iterable[Person], rules: ScoringRules, now: datetime
) -> int:
    connection = await asyncpg.connect(dsn)
    loaded = 0
    try:
        for batch in chunks(people, 50_000):
            tables = rows(batch, rules, now)
            await connection.copy_records_to_table(
                "profiles",
                columns=["id", "first_name", "email", "company", "attributes", "score_events",
                         "score_attributes", "created_at", "updated_at"],
                records=[(i, f, e, c, as_json(a), s, 0.0, t, t) for i, f, e, c, a, s, t in tables["profiles"]],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "identities", columns=["id", "profile_id", "kind", "address", "created_at"],
                records=tables["identities"],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "events", columns=["profile_id", "type", "properties", "occurred_at", "received_at"],
                records=[(p, t, as_json(props), a, r) for p, t, props, a, r in tables["events"]],
            )  # fmt: skip
            await connection.copy_records_to_table(
                "consent_states", columns=["profile_id", "channel", "purpose", "state", "since"],
                records=tables["consent_states"],
            )  # fmt: skip
            loaded += len(batch)
        # What autovacuum would have done by the time anyone queries: hint bits, statistics.
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return loaded


def load_sqlite(path: str, people: Iterable[Person], rules: ScoringRules, now: datetime) -> int:
    engine = create_sync_engine(f"sqlite:///{path}")
    loaded = 0
    with engine.begin() as connection:
        for batch in chunks(people, 50_000):
            tables = rows(batch, rules, now)
            connection.execute(
                insert(Profile),
                [{"id": i, "first_name": f, "email": e, "company": c, "attributes": a,
                  "score_events": s, "score_attributes": 0.0, "created_at": t, "updated_at": t}
                 for i, f, e, c, a, s, t in tables["profiles"]],
            )  # fmt: skip
            connection.execute(
                insert(Identity),
                [{"id": i, "profile_id": p, "kind": k, "address": a, "created_at": t}
                 for i, p, k, a, t in tables["identities"]],
            )  # fmt: skip
            connection.execute(
                insert(Event),
                [{"profile_id": p, "type": t, "properties": props, "occurred_at": a, "received_at": r}
                 for p, t, props, a, r in tables["events"]],
            )  # fmt: skip
            if tables["consent_states"]:
                connection.execute(
                    insert(ConsentState),
                    [{"profile_id": p, "channel": c, "purpose": u, "state": s, "since": t}
                     for p, c, u, s, t in tables["consent_states"]],
                )  # fmt: skip
            loaded += len(batch)
        connection.exec_driver_sql("ANALYZE")
    engine.dispose()
    return loaded


async def finish_scores(url: str, rules: ScoringRules, now: datetime) -> None:
    """Attribute points in SQL, and the note that scores follow these rules."""
    engine = create_engine(url)
    try:
        async with create_session_factory(engine).begin() as session:
            await scoring.rescore_attributes(session, rules, now)
            await scoring.record_current(session, rules, now)
    finally:
        await engine.dispose()
