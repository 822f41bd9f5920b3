"""Bearer tokens for the API: issued once in plain text, stored as SHA-256.

Tokens are 256 random bits, so a fast hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.clock import Clock
from backend.core.models import ApiToken

TOKEN_PREFIX = "pk_"  # noqa: S105 (a label, not a secret)


class Role(StrEnum):
    ADMIN = "admin"
    MARKETER = "marketer"
    SERVICE = "service"  # the action server and the channels
    ANALYST = "analyst"  # read only
    AGENT = "agent"  # answers customers in hand-offs


@dataclass(frozen=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown to whoever asked for it, once; never stored or logged


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def issue(
    session: AsyncSession, *, name: str, role: Role, clock: Clock, ephemeral: bool = False
) -> IssuedToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name,
        role=role.value,
        token_hash=hash_token(secret),
        prefix=secret[:10],
        ephemeral=ephemeral,
        created_at=clock.now(),
    )
    session.add(token)
    await session.flush()
    return IssuedToken(token, secret)


async def authenticate(session: AsyncSession, secret: str) -> ApiToken | None:
    """The live token with this secret, if any."""
    return await session.scalar(
        select(ApiToken).where(
            ApiToken.token_hash == hash_token(secret), ApiToken.revoked_at.is_(None)
        )
    )


async def revoke_ephemeral(session: AsyncSession, clock: Clock) -> int:
    """Revoke the tokens earlier `parley run`s minted for themselves."""
    result = await session.execute(
        update(ApiToken)
        .where(ApiToken.ephemeral.is_(True), ApiToken.revoked_at.is_(None))
        .values(revoked_at=clock.now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def live(session: AsyncSession) -> list[ApiToken]:
    """Tokens that still work, oldest first."""
    result = await session.scalars(
        select(ApiToken).where(ApiToken.revoked_at.is_(None)).order_by(ApiToken.created_at)
    )
    return list(result)


async def revoke(session: AsyncSession, prefix: str, clock: Clock) -> list[ApiToken]:
    """The live tokens whose shown prefix starts with `prefix`; revoked only if exactly one
    does, so an ambiguous prefix revokes nothing."""
    found = [t for t in await live(session) if t.prefix.startswith(prefix)]
    if len(found) == 1:
        found[0].revoked_at = clock.now()
        await session.flush()
    return found
