"""Fixtures for the backend runtime's tests: a real database (SQLite, and PostgreSQL
when the server is there), the real app, and tokens for each role."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from backend import api_tokens, migrations_runner
from backend.api_tokens import Role
from backend.app import create_app
from backend.clock import FixedClock
from backend.database import create_engine, create_session_factory
from backend.settings import Settings

POSTGRES_DSN = os.environ.get(
    "PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


async def _create_postgres_database() -> str:
    name = f"parley_test_{secrets.token_hex(6)}"
    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        message = f"PostgreSQL is not reachable at {POSTGRES_DSN}: {error}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: PostgreSQL-backed tests are mandatory)")
        pytest.skip(message)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def _drop_postgres_database(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
        return
    name = await _create_postgres_database()
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        yield f"{base}/{name}"
    finally:
        await _drop_postgres_database(name)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))


@pytest.fixture
async def settings(database_url: str, tmp_path: Path) -> Settings:
    settings = Settings(
        _env_file=None,
        database_url=database_url,
        var_dir=tmp_path / "var",
        secret_key="test-secret-key",
    )
    engine = create_engine(database_url)
    try:
        await migrations_runner.upgrade(engine)
    finally:
        await engine.dispose()
    return settings


IssueToken = Callable[[Role], Awaitable[str]]


@pytest.fixture
def issue_token(settings: Settings, clock: FixedClock) -> IssueToken:
    async def issue(role: Role) -> str:
        engine = create_engine(settings.resolved_database_url)
        try:
            async with create_session_factory(engine).begin() as session:
                issued = await api_tokens.issue(
                    session, name=f"test {role}", role=role, clock=clock
                )
                return issued.secret
        finally:
            await engine.dispose()

    return issue


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], settings: Settings, clock: FixedClock
) -> TestClient:
    return await aiohttp_client(create_app(settings, clock))


@pytest.fixture
async def service_headers(issue_token: IssueToken) -> dict[str, str]:
    return {"Authorization": f"Bearer {await issue_token(Role.SERVICE)}"}


class Api:
    """A test client that sends one role's token and decodes JSON or problem bodies."""

    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(
        self, method: str, path: str, body: object = None, expect: int | None = 200
    ) -> dict[str, Any]:
        response = await self.client.request(
            method, path, json=body, headers=self.headers, allow_redirects=False
        )
        text = await response.text()
        if expect is not None:
            assert response.status == expect, f"{method} {path} -> {response.status}: {text}"
        data: dict[str, Any] = json.loads(text) if text else {}
        data.setdefault("_status", response.status)
        return data

    async def get(self, path: str, expect: int | None = 200) -> dict[str, Any]:
        return await self.call("GET", path, expect=expect)

    async def post(self, path: str, body: object, expect: int | None = 200) -> dict[str, Any]:
        return await self.call("POST", path, body, expect)

    async def identify(self, channel: str, address: str, **attributes: Any) -> dict[str, Any]:
        data = await self.call(
            "POST",
            "/api/v1/identify",
            {"channel": channel, "address": address, "attributes": attributes},
            expect=None,
        )
        assert data["_status"] in (200, 201), data
        profile: dict[str, Any] = data["profile"]
        return profile


@pytest.fixture
async def admin(client: TestClient, issue_token: IssueToken) -> Api:
    return Api(client, await issue_token(Role.ADMIN))


@pytest.fixture
async def service(client: TestClient, issue_token: IssueToken) -> Api:
    return Api(client, await issue_token(Role.SERVICE))


@pytest.fixture
async def marketer(client: TestClient, issue_token: IssueToken) -> Api:
    return Api(client, await issue_token(Role.MARKETER))
