"""Typed keys for what the aiohttp application and its requests share."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.clock import Clock
from backend.models import ApiToken
from backend.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[AsyncSession])
# The OpenAPI document, rendered once at start-up.
OPENAPI = web.AppKey("openapi", str)

# The token that authenticated the current request.
CALLER = web.RequestKey("caller", ApiToken)
