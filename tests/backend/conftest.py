"""Fixtures for the backend runtime's tests: a real database (SQLite, and PostgreSQL
when the server is there), the real app, and tokens for each role."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from alembic import command
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from backend.api import tokens as api_tokens
from backend.api.app import create_app
from backend.api.keys import SESSIONS, TEXT_TURNS
from backend.api.tokens import Role
from backend.core import migrations_runner
from backend.core.clock import FixedClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import Message
from backend.core.settings import Settings
from backend.devtools.mail_sink import Received
from backend.devtools.twilio_emulator import TwilioEmulator
from backend.messaging.text_turns import PENDING
from tests.servers import POSTGRES_DSN, free_port, server_missing


class MigratedTemplates:
    """One migrated database per engine for the whole test session, copied for each
    test: migrating from scratch cost about 0.15 s a test on SQLite and 0.5 s on
    PostgreSQL. The copies are made from the real migrations (backend.core.migrations_runner),
    so test_migrations still compares what they build with the models."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sqlite: Path | None = None
        self._postgres: str | None = None

    def sqlite(self) -> Path:
        if self._sqlite is None:
            path = self.directory / "template.db"
            asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
            self._sqlite = path
        return self._sqlite

    def postgres(self) -> str:
        if self._postgres is None:
            name = asyncio.run(_create_postgres_database())
            asyncio.run(migrate(_postgres_url(name)))
            self._postgres = name
        return self._postgres

    def drop(self) -> None:
        if self._postgres is not None:
            asyncio.run(_drop_postgres_database(self._postgres))


async def migrate(url: str) -> None:
    """Apply every migration to the database at `url`."""
    engine = create_engine(url)
    try:
        await migrations_runner.upgrade(engine)
    finally:
        await engine.dispose()


async def migrate_again_from(url: str, revision: str) -> None:
    """Downgrade the database at `url` to `revision`, then upgrade it to the newest:
    the later migrations run again over what the database holds."""

    def down(connection: Connection) -> None:
        config = migrations_runner.alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(down)
        await migrations_runner.upgrade(engine)
    finally:
        await engine.dispose()


def _postgres_url(name: str) -> str:
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


async def _create_postgres_database(template: str | None = None) -> str:
    name = f"parley_test_{secrets.token_hex(6)}"
    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as error:
        server_missing(f"PostgreSQL is not reachable at {POSTGRES_DSN}: {error}")
    try:
        copy = f' TEMPLATE "{template}"' if template else ""
        await connection.execute(f'CREATE DATABASE "{name}"{copy}')
    finally:
        await connection.close()
    return name


async def _drop_postgres_database(name: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("templates"))
    yield templates
    templates.drop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, migrated_templates: MigratedTemplates
) -> AsyncIterator[str]:
    """A migrated database of its own for each test."""
    if request.param == "sqlite":
        path = tmp_path / "parley.db"
        shutil.copyfile(await asyncio.to_thread(migrated_templates.sqlite), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = await asyncio.to_thread(migrated_templates.postgres)
    name = await _create_postgres_database(template)
    try:
        yield _postgres_url(name)
    finally:
        await _drop_postgres_database(name)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 3, 2, 9, 30, tzinfo=UTC))


@pytest.fixture
async def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        database_url=database_url,
        var_dir=tmp_path / "var",
        secret_key="test-secret-key",
    )


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
    settings: Settings, clock: FixedClock, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> TestClient:
    # `settings` (the database) first: the app stops before its database is dropped.
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

    async def delete(self, path: str, expect: int | None = 200) -> dict[str, Any]:
        return await self.call("DELETE", path, expect=expect)

    async def hand_off(self, conversation: str, channel: str, **attributes: Any) -> dict[str, Any]:
        """A person, known by the conversation's identity, asks for someone (201)."""
        kind = "web" if channel == "webchat" else "sms"
        person = await self.identify(kind, conversation, **attributes)
        return await self.post(
            "/api/v1/handoffs",
            {"conversation_id": conversation, "channel": channel, "reason": "requested",
             "profile_id": person["id"]},
            expect=201,
        )  # fmt: skip

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


# ------------------------------------------------------------- the app, texting for real

TWILIO_TOKEN = "test-twilio-auth-token"
BUSINESS_NUMBER = "+15005550006"


@dataclass
class TextingBackend:
    """The real app on a loopback port, texting through a Twilio emulator."""

    api: Api
    twilio: TwilioEmulator
    client: TestClient
    app: web.Application
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.backend_port}"

    def sent_to(self, number: str) -> list[str]:
        return [m.body for m in self.twilio.messages.values() if m.to == number]

    async def texted(self, sender: str, body: str, **extra: Any) -> dict[str, Any]:
        """The person texts the business (as the SMS channel hands it over); a keyword's
        confirmation is awaited (backend.messaging.text_turns sends it)."""
        receipt = await self.api.post(
            "/api/v1/inbound-texts",
            {"sid": "SM" + secrets.token_hex(16), "from": sender, "to": BUSINESS_NUMBER,
             "body": body, **extra},
            expect=None,
        )  # fmt: skip
        await self.keywords_answered()
        return receipt

    async def keywords_answered(self) -> None:
        """Wait until every keyword text recorded so far has had its answer."""
        owed = select(func.count()).where(Message.turn == PENDING, Message.keyword.is_not(None))
        for _ in range(1000):
            await self.app[TEXT_TURNS].settled()
            async with self.app[SESSIONS]() as session:
                if not await session.scalar(owed):
                    return
            await asyncio.sleep(0.01)
        raise AssertionError("a keyword text was not answered within 10 s")

    async def consent(self, profile_id: str) -> dict[tuple[str, str], str]:
        data = await self.api.get(f"/api/v1/profiles/{profile_id}/consent")
        return {(s["channel"], s["purpose"]): s["state"] for s in data["states"]}

    async def subscribe(self, profile_id: str) -> None:
        """SMS marketing consent, asked and confirmed by the person's YES."""
        for action in ("grant", "confirm"):
            await self.api.post(
                f"/api/v1/profiles/{profile_id}/consent",
                {"channel": "sms", "purpose": "marketing", "action": action,
                 "source": "sms_keyword", "reply": "YES"},
                expect=201,
            )  # fmt: skip

    async def settle(self) -> None:
        """Let the emulator's status callbacks arrive."""
        await self.twilio.settled()


StartTexting = Callable[..., Awaitable[TextingBackend]]


@pytest.fixture
def start_texting(
    settings: Settings,
    clock: FixedClock,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> StartTexting:
    """Start the app with a Twilio emulator; keyword arguments override settings.

    `settings` (and so the database) comes first: the servers stop before a PostgreSQL
    test database is dropped, or closing the app's connections waits seconds each."""

    async def start(**overrides: Any) -> TextingBackend:
        twilio = TwilioEmulator(settings.twilio_account_sid, TWILIO_TOKEN)
        twilio_server = await aiohttp_server(twilio.app())
        configured = settings.model_copy(
            update={
                "twilio_auth_token": SecretStr(TWILIO_TOKEN),
                "twilio_api_url": str(twilio_server.make_url("")).rstrip("/"),
                "backend_port": free_port(),
                "sms_sends_per_second": 1000.0,
                **overrides,
            }
        )
        app = create_app(configured, clock)
        client = await aiohttp_client(TestServer(app, port=configured.backend_port))
        engine = create_engine(settings.resolved_database_url)
        try:
            async with create_session_factory(engine).begin() as session:
                issued = await api_tokens.issue(session, name="texting", role=Role.SERVICE,
                                                clock=clock)  # fmt: skip
        finally:
            await engine.dispose()
        return TextingBackend(Api(client, issued.secret), twilio, client, app, configured)

    return start


async def ask_for_email_marketing(api: Api, person: str) -> None:
    """The person agrees to marketing e-mail (pending: a confirmation e-mail goes)."""
    await api.post(
        f"/api/v1/profiles/{person}/consent",
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "api",
         "wording": "Send me news by e-mail"},
        expect=201,
    )  # fmt: skip


async def follow_confirmation_link(client: TestClient, asked: Received, public: str) -> None:
    """Press the button of the page the confirmation e-mail `asked` links to."""
    link = re.search(re.escape(public) + r"(/email/confirm/\S+)", asked.part("plain") or "")
    assert link is not None, asked.part("plain")
    done = await client.post(link.group(1), data={"confirm": "1"})
    assert done.status == 200, await done.text()
