"""The database engine's connection pool on PostgreSQL: connections that the server
dropped (a restart, an administrator, a proxy) are found before they are used."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from backend.core.database import create_engine
from tests.servers import POSTGRES_DSN

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


async def _drop_connections_to(database: str) -> int:
    """What a server restart does to a database's clients: every connection is closed."""
    admin = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        return int(
            await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
        )
    finally:
        await admin.close()


async def test_a_connection_the_server_dropped_while_idle_is_replaced_before_use(
    database_url: str,
) -> None:
    engine = create_engine(database_url, ping_idle_after=0.05)
    try:
        # Two pooled connections, both idle once this returns.
        async with engine.connect() as first, engine.connect() as second:
            assert await first.scalar(text("SELECT 1")) == 1
            assert await second.scalar(text("SELECT 1")) == 1
        assert await _drop_connections_to(database_url.rsplit("/", 1)[1]) == 2
        await asyncio.sleep(0.1)

        # Both are dead: each is found so on checkout, not by the statement.
        for _ in range(3):
            async with engine.begin() as connection:
                assert await connection.scalar(text("SELECT 2")) == 2
    finally:
        await engine.dispose()
