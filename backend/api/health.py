"""`GET /health`: is the backend up and can it reach its database?"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backend.api.bodies import respond
from backend.api.keys import ENGINE
from backend.api.problems import Problem
from backend.api.schemas import Health
from backend.core.logs import get_logger

log = get_logger(__name__)


async def health(request: web.Request) -> web.Response:
    try:
        async with request.app[ENGINE].connect() as connection:
            await connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as error:
        log.warning("health.database_unreachable", error=type(error).__name__)
        raise Problem(503, "The database is unreachable.", type_="database-unavailable") from error
    return respond(Health(status="ok", database="ok"))
