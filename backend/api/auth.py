"""Bearer-token authentication and the permission check, as one middleware."""

from __future__ import annotations

from aiohttp import web

from backend.api import tokens as api_tokens
from backend.api.keys import CALLER, SESSIONS
from backend.api.permissions import CONSOLE_ROUTES, PUBLIC, allowed
from backend.api.problems import Handler, Problem
from backend.api.tokens import Role

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="parley"'}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_name = request.match_info.route.name
    # Unmatched paths fall through to the router's 404/405 (they name no route). The
    # console's pages check its own sign-in, against the same permission table.
    if route_name is None or route_name in PUBLIC or route_name.startswith(CONSOLE_ROUTES):
        return await handler(request)

    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Problem(
            401,
            "Send an API token as 'Authorization: Bearer <token>'.",
            type_="unauthenticated",
            headers=CHALLENGE,
        )
    async with request.app[SESSIONS]() as session:
        token = await api_tokens.authenticate(session, secret.strip())
    if token is None:
        raise Problem(
            401, "The API token is unknown or revoked.", type_="unauthenticated", headers=CHALLENGE
        )
    if not allowed(route_name, Role(token.role)):
        raise Problem(403, f"The role '{token.role}' may not call {route_name}.", type_="forbidden")
    request[CALLER] = token
    return await handler(request)
