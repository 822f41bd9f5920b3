"""The route table: every route the backend serves, in one list.

The app registers these, the auth middleware looks up their names in the permission
table, and the OpenAPI document is generated from them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from backend.api import health, openapi, profiles
from backend.api.schemas import Health, IdentifyRequest, IdentifyResult, ProfileOut


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: type[BaseModel] | None = None
    responses: dict[int, type[BaseModel] | None] = field(default_factory=dict)
    tag: str = "profiles"


ROUTES: list[Route] = [
    Route(
        "GET", "/health", "health", health.health,
        "Is the backend up, and can it reach its database?",
        responses={200: Health}, tag="operations",
    ),
    Route(
        "GET", "/api/v1/openapi.json", "openapi", openapi.serve,
        "This API's OpenAPI 3.1 document.",
        responses={200: None}, tag="operations",
    ),
    Route(
        "POST", "/api/v1/identify", "identify", profiles.identify,
        "Find or create the profile behind a channel identity, and update it.",
        body=IdentifyRequest, responses={200: IdentifyResult, 201: IdentifyResult},
    ),
    Route(
        "GET", "/api/v1/profiles/{id}", "get_profile", profiles.get_profile,
        "Read one profile with its identities.",
        responses={200: ProfileOut},
    ),
]  # fmt: skip


def register(app: web.Application) -> None:
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler, name=route.name)
