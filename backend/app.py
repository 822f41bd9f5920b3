"""The backend's aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from backend import data_files, scoring, secret_key, segment_store
from backend.api import openapi, routes
from backend.api.auth import auth_middleware
from backend.api.bodies import MAX_BODY_BYTES
from backend.clock import Clock, SystemClock
from backend.database import create_engine, create_session_factory
from backend.keys import (
    CLOCK,
    DIRECTORY,
    ENGINE,
    FILE_SEGMENTS,
    RASA,
    SCORING,
    SESSIONS,
    SETTINGS,
)
from backend.logs import get_logger
from backend.problems import problem_middleware
from backend.profiles import ProfileDirectory
from backend.rasa_client import RasaClient
from backend.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    """The backend, ready to serve. Raises `data_files.DataFileInvalid` if data/ has
    mistakes and `secret_key.SecretKeyMissing` if a shared database has no key."""
    clock = clock or SystemClock()
    rules = data_files.load_scoring(settings.data_path)
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[SCORING] = rules
    app[FILE_SEGMENTS] = data_files.load_segments(settings.data_path)
    app[DIRECTORY] = ProfileDirectory(
        clock=clock, rules=rules, erasure_key=secret_key.load_or_create(settings)
    )
    app[RASA] = RasaClient(
        settings.rasa_url, settings.rasa_token.get_secret_value() if settings.rasa_token else None
    )
    app.cleanup_ctx.append(_database)
    routes.register(app)
    openapi.install(app, routes.ROUTES)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].resolved_database_url)
    app[ENGINE] = engine
    app[SESSIONS] = sessions = create_session_factory(engine)
    now = app[CLOCK].now()
    async with sessions.begin() as session:
        if await scoring.ensure_current(session, app[SCORING], now):
            log.info("scores.rebuilt", reason="scoring rules changed")
        synced = await segment_store.sync_files(session, app[FILE_SEGMENTS], now)
        if synced.added or synced.changed or synced.removed:
            log.info(
                "segments.synced",
                added=synced.added,
                changed=synced.changed,
                removed=synced.removed,
            )
    yield
    await engine.dispose()
