"""The people who sign in to the console: e-mail and password, one role each.

Passwords are kept only as argon2id hashes (argon2-cffi, its RFC 9106 defaults). After
`MAX_FAILURES` wrong passwords in a row an account is locked for `LOCKED_FOR`, and while
locked no password is even checked, so guessing is slowed to a handful an hour. An
unknown address costs the same hash as a known one, so timing does not tell which
addresses have accounts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.clock import Clock
from backend.core.models import ConsoleUser

ROLES = ("admin", "marketer", "agent", "analyst")  # the API's roles, but `service`
MAX_FAILURES = 5
LOCKED_FOR = timedelta(minutes=15)
MIN_PASSWORD = 12  # characters; NIST SP 800-63B asks at least 8, and no other rules

_hasher = PasswordHasher()
_NOBODY = _hasher.hash("an account that does not exist")


class UserRefused(ValueError):
    """The account cannot be made as asked (`str` says why)."""


@dataclass(frozen=True)
class SignIn:
    user: ConsoleUser | None  # None: refused
    locked_until: datetime | None = None  # set when refused because the account is locked


def normal_email(email: str) -> str:
    return email.strip().lower()


async def create(
    session: AsyncSession, clock: Clock, email: str, role: str, password: str
) -> ConsoleUser:
    address = normal_email(email)
    if "@" not in address or len(address) > 320:
        raise UserRefused(f"{email!r} is not an e-mail address")
    if role not in ROLES:
        raise UserRefused(f"the role must be one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise UserRefused(f"the password must have at least {MIN_PASSWORD} characters")
    if await by_email(session, address) is not None:
        raise UserRefused(f"{address} has an account already")
    hashed = await asyncio.to_thread(_hasher.hash, password)
    user = ConsoleUser(
        email=address, role=role, password_hash=hashed, failed_sign_ins=0,
        created_at=clock.now(),
    )  # fmt: skip
    session.add(user)
    await session.flush()
    return user


async def set_disabled(
    session: AsyncSession, clock: Clock, email: str, disabled: bool
) -> ConsoleUser:
    """Disable an account (it cannot sign in, and a session it holds ends at its next
    request) or enable it again. Raises UserRefused for an unknown address."""
    user = await by_email(session, email)
    if user is None:
        raise UserRefused(f"{normal_email(email)} has no account")
    if disabled and user.disabled_at is None:
        user.disabled_at = clock.now()
    elif not disabled:
        user.disabled_at, user.failed_sign_ins, user.locked_until = None, 0, None
    await session.flush()
    return user


async def by_email(session: AsyncSession, email: str) -> ConsoleUser | None:
    return await session.scalar(select(ConsoleUser).where(ConsoleUser.email == normal_email(email)))


async def sign_in(session: AsyncSession, clock: Clock, email: str, password: str) -> SignIn:
    """The account, if the password is its own and it is neither locked nor disabled;
    counts the failure (and locks at the limit) if not."""
    user = await by_email(session, email)
    now = clock.now()
    if user is None or user.disabled_at is not None:
        await _verify(_NOBODY, password)
        return SignIn(None)
    if user.locked_until is not None and user.locked_until > now:
        return SignIn(None, user.locked_until)
    if not await _verify(user.password_hash, password):
        user.failed_sign_ins += 1
        if user.failed_sign_ins >= MAX_FAILURES:
            user.failed_sign_ins, user.locked_until = 0, now + LOCKED_FOR
            return SignIn(None, user.locked_until)
        return SignIn(None)
    user.failed_sign_ins, user.locked_until = 0, None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return SignIn(user)


async def _verify(hashed: str, password: str) -> bool:
    """Off the event loop: a hash takes tens of milliseconds and 64 MiB by design."""
    try:
        return await asyncio.to_thread(_hasher.verify, hashed, password)
    except (VerificationError, InvalidHashError):
        return False
