"""Every API route wants a live bearer token whose role the permission table allows."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from backend.api.app import create_app
from backend.api.permissions import PERMISSIONS, PUBLIC
from backend.api.route_table import ROUTES
from backend.api.tokens import Role
from backend.core.settings import Settings
from tests.backend.conftest import IssueToken

IDENTIFY = "/api/v1/identify"
BODY = {"channel": "web", "address": "auth-test"}


async def test_no_token_is_a_401_with_a_bearer_challenge(client: TestClient) -> None:
    response = await client.post(IDENTIFY, json=BODY)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await response.json())["type"] == "urn:parley:problem:unauthenticated"


async def test_an_unknown_token_is_a_401(client: TestClient) -> None:
    for header in ("Bearer pk_made-up", "Basic dXNlcjpwYXNz", "Bearer ", "pk_no-scheme"):
        response = await client.post(IDENTIFY, json=BODY, headers={"Authorization": header})
        assert response.status == 401, header


async def test_a_role_the_table_does_not_allow_is_a_403(
    client: TestClient, issue_token: IssueToken
) -> None:
    analyst = await issue_token(Role.ANALYST)
    response = await client.post(
        IDENTIFY, json=BODY, headers={"Authorization": f"Bearer {analyst}"}
    )
    assert response.status == 403
    assert "analyst" in (await response.json())["detail"]


async def test_health_needs_no_token(client: TestClient) -> None:
    response = await client.get("/health")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "database": "ok"}


async def test_every_role_on_every_route_gets_exactly_what_the_table_says(
    client: TestClient, issue_token: IssueToken
) -> None:
    tokens = {role: await issue_token(role) for role in Role}
    for route in ROUTES:
        if route.name in PUBLIC:
            continue
        path = route.path.format(
            id="00000000-0000-0000-0000-000000000000",
            name="hot-leads",
            channel="sms",
            purpose="marketing",
            conversation_id="auth-test",
        )
        for role, token in tokens.items():
            response = await client.request(
                route.method, path, json=BODY, headers={"Authorization": f"Bearer {token}"}
            )
            allowed = role in PERMISSIONS.get(route.name, frozenset())
            assert (response.status != 403) == allowed, (route.name, role, response.status)
            assert response.status != 401


async def test_a_route_missing_from_the_permission_table_is_denied_to_every_role(
    settings: Settings,  # first: the app stops before its database is dropped
    aiohttp_client,
    clock,
    issue_token: IssueToken,
) -> None:
    app = create_app(settings, clock)

    async def secret(_: web.Request) -> web.Response:
        return web.json_response({"leaked": True})

    app.router.add_get("/api/v1/unlisted", secret, name="unlisted")
    client = await aiohttp_client(app)
    for role in Role:
        token = await issue_token(role)
        response = await client.get(
            "/api/v1/unlisted", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status == 403


def test_every_route_is_in_the_permission_table_or_public() -> None:
    for route in ROUTES:
        assert route.name in PERMISSIONS or route.name in PUBLIC, route.name
