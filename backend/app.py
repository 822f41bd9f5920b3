"""The backend's aiohttp application."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from backend.api import openapi, routes
from backend.api.auth import auth_middleware
from backend.api.bodies import MAX_BODY_BYTES
from backend.clock import Clock, SystemClock
from backend.database import create_engine, create_session_factory
from backend.keys import CLOCK, ENGINE, SESSIONS, SETTINGS
from backend.problems import problem_middleware
from backend.settings import Settings


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app.cleanup_ctx.append(_database)
    routes.register(app)
    openapi.install(app, routes.ROUTES)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    engine = create_engine(app[SETTINGS].resolved_database_url)
    app[ENGINE] = engine
    app[SESSIONS] = create_session_factory(engine)
    yield
    await engine.dispose()
