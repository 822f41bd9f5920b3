"""A database that cannot be used now (down, restarting, refusing connections) is a 503
problem with Retry-After, whatever shape the driver's error takes; any other error is
still a 500. PostgreSQL starting up after a crash answers "the database system is
starting up" (SQLSTATE 57P03), which SQLAlchemy raises as a plain DBAPIError: that one
was a 500 until tests/e2e/test_scale_profile.py restarted PostgreSQL under load."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from sqlalchemy import exc

from backend.api.problems import problem_middleware

Client = Callable[..., Awaitable[TestClient]]


def starting_up() -> exc.DBAPIError:
    # As SQLAlchemy's asyncpg dialect raises it: the driver's error, translated.
    cause = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    error = exc.DBAPIError("SELECT 1", {}, Exception(str(cause)))
    error.orig.__cause__ = cause  # type: ignore[union-attr]
    return error


async def answer_to(aiohttp_client: Client, error: Exception) -> ClientResponse:
    """What the API answers when a route raises `error`."""

    async def fails(_: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/thing", fails)
    client = await aiohttp_client(app)
    return await client.get("/thing")


@pytest.mark.parametrize(
    "error",
    [
        starting_up(),
        exc.OperationalError("SELECT 1", {}, Exception("database is locked")),
        exc.DBAPIError("SELECT 1", {}, ConnectionRefusedError()),
        ConnectionResetError(),
    ],
    ids=["starting up", "sqlite locked", "refused", "reset"],
)
async def test_a_database_that_cannot_be_used_now_is_a_503_problem(
    aiohttp_client: Client, error: Exception
) -> None:
    response = await answer_to(aiohttp_client, error)
    assert response.status == 503
    assert response.content_type == "application/problem+json"
    assert response.headers["Retry-After"] == "5"
    body = await response.json(content_type=None)
    assert body["type"].endswith("database-unavailable") and body["status"] == 503


@pytest.mark.parametrize(
    "error",
    [exc.IntegrityError("INSERT", {}, Exception("unique")), KeyError("bug")],
    ids=["integrity", "bug"],
)
async def test_other_errors_are_still_a_500_problem(
    aiohttp_client: Client, error: Exception
) -> None:
    response = await answer_to(aiohttp_client, error)
    assert response.status == 500
    assert (await response.json(content_type=None))["status"] == 500
