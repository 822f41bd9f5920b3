"""Backend processes started together on one PostgreSQL database, as the scale profile
and docker compose start them: each starts, and what a start does once (rescoring for
new rules, syncing the segment files) is done once, not failed by the second."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from backend.api.app import create_app
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import ScoringState, Segment
from backend.core.settings import PROJECT_ROOT, Settings
from tests.backend.conftest import Api, IssueToken

pytestmark = pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

STARTED_TOGETHER = 3


async def test_backends_started_together_on_a_new_database_all_start(
    settings: Settings,
    clock: FixedClock,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    issue_token: IssueToken,
) -> None:
    shipped = settings.model_copy(update={"data_dir": PROJECT_ROOT / "data"})
    clients = await asyncio.gather(
        *(aiohttp_client(create_app(shipped, clock)) for _ in range(STARTED_TOGETHER))
    )
    token = await issue_token(Role.ADMIN)
    for client in clients:
        segments = await Api(client, token).get("/api/v1/segments")
        names = [s["name"] for s in segments["items"]]
        assert len(names) == len(set(names))
        assert {"hot-leads", "big-teams"} <= set(names)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with create_session_factory(engine)() as session:
            assert await session.scalar(select(func.count()).select_from(ScoringState)) == 1
            assert await session.scalar(select(func.count()).select_from(Segment)) == len(names)
    finally:
        await engine.dispose()
