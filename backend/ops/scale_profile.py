"""`parley run --profile scale`: the scale profile's topology, natively on one machine.

The same processes docker-compose.yml runs, against the local PostgreSQL, Redis and
RabbitMQ: PARLEY_SCALE_REPLICAS (default two) Rasa servers sharing the PostgreSQL
tracker store and the Redis lock store (bot/endpoints.scale.yml), each with its own
action server, and as many backend API processes; two scheduler workers; the consumer
of Rasa's conversation events (RabbitMQ); and the entry point (backend/ops/entry_point.py)
that spreads requests over the replicas on the ports the embedded default's single
processes use, so every URL stays the same.

Where the servers are: PARLEY_DATABASE_URL (default the `parley` database on the local
PostgreSQL), PARLEY_RASA_TRACKER_STORE_URL (default `parley_rasa` there), both created
if missing; PARLEY_REDIS_HOST; PARLEY_RABBITMQ_*. The secret key is the machine's own
(var/secret.key) unless PARLEY_SECRET_KEY is set: every process here gets the same.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from backend.core import secret_key
from backend.core.settings import Settings

DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:5432/parley"
TRACKER_STORE = "postgresql://postgres@127.0.0.1:5432/parley_rasa"
ENDPOINTS = Path("bot/endpoints.scale.yml")
WORKERS = 2  # scheduler workers


def settings_for(settings: Settings) -> Settings:
    """The operator's settings with the scale profile's defaults where they set none."""
    default = Settings.model_fields
    return settings.model_copy(
        update={
            "database_url": settings.database_url or DATABASE,
            "rasa_tracker_store_url": settings.rasa_tracker_store_url or TRACKER_STORE,
            "rasa_endpoints": (
                ENDPOINTS
                if settings.rasa_endpoints == default["rasa_endpoints"].default
                else settings.rasa_endpoints
            ),
            "secret_key": settings.secret_key or SecretStr(secret_key.machine_key(settings)),
        }
    )


async def create_databases(settings: Settings) -> list[str]:
    """Create the backend's and the tracker store's PostgreSQL databases if missing;
    the names created."""
    created = []
    for url in (settings.resolved_database_url, settings.resolved_tracker_store_url):
        parsed = make_url(url)
        if not parsed.drivername.startswith("postgresql") or not parsed.database:
            raise ValueError(f"the scale profile needs PostgreSQL, not {parsed.drivername}")
        connection = await asyncpg.connect(
            host=parsed.host or "127.0.0.1", port=parsed.port or 5432,
            user=parsed.username, password=parsed.password, database="postgres",
        )  # fmt: skip
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", parsed.database
            )
            if not exists:
                name = parsed.database.replace('"', '""')
                await connection.execute(f'CREATE DATABASE "{name}"')
                created.append(parsed.database)
        finally:
            await connection.close()
    return created
