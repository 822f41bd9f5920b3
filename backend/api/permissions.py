"""Who may call what: the one table that decides every API route.

Keys are route names (see `backend.api.routes`). A route missing here is denied to
everyone; `PUBLIC` routes need no token.
"""

from __future__ import annotations

from backend.api_tokens import Role

ADMIN, MARKETER, SERVICE, ANALYST = Role.ADMIN, Role.MARKETER, Role.SERVICE, Role.ANALYST
EVERYONE = frozenset(Role)

PUBLIC: frozenset[str] = frozenset({"health"})

PERMISSIONS: dict[str, frozenset[Role]] = {
    "openapi": EVERYONE,
    "identify": frozenset({ADMIN, SERVICE}),
    "get_profile": EVERYONE,
}


def allowed(route_name: str, role: Role) -> bool:
    return role in PERMISSIONS.get(route_name, frozenset())
