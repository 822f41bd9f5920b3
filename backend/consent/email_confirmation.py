"""Double opt-in by e-mail: a grant of e-mail marketing consent waits (pending) until the
person follows the link in the confirmation e-mail Parley sends them, so that nobody
gets marketing at an address someone else typed, and the ledger holds the proof that
the address's owner agreed.

The link carries a token signed with a key derived from the installation's secret key
(HS256, pyjwt), naming the person, the address and the ledger line of the grant it
confirms, and expiring after `VALID_FOR`. Following it (the page's button: opening the
page alone confirms nothing, since mail scanners open links) confirms that grant in the
ledger, with how and from which address. A link for a grant that was withdrawn, or
replaced by a newer one, confirms nothing and says so."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger
from backend.consent.ledger import Action, Channel, Entry, Purpose, Source
from backend.core import audit
from backend.core.clock import Clock
from backend.core.models import Profile

PURPOSE = "email-confirm"
ALGORITHM = "HS256"
VALID_FOR = timedelta(days=7)


@dataclass(frozen=True)
class Request:
    """The grant a confirmation link confirms."""

    profile_id: uuid.UUID
    address: str
    seq: int  # the pending grant's ledger line


class Outcome(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"  # confirmed before: nothing new recorded
    GONE = "gone"  # withdrawn since, replaced by a newer request, or the person erased


def signing_key(secret_key: bytes) -> bytes:
    """A key for these tokens alone, derived from the installation's secret key."""
    return hmac.new(secret_key, b"parley email confirmation", hashlib.sha256).digest()


def token(key: bytes, request: Request, now: datetime) -> str:
    claims = {
        "pur": PURPOSE, "sub": str(request.profile_id), "adr": request.address,
        "seq": request.seq, "exp": int((now + VALID_FOR).timestamp()),
    }  # fmt: skip
    return jwt.encode(claims, key, algorithm=ALGORITHM)


class Expired(Exception):
    """A genuine link, past its time."""


def read(key: bytes, value: str, now: datetime) -> Request | None:
    """The request a token names; None for anything that is not one of ours. Raises
    Expired for one of ours that is too old."""
    try:
        claims = jwt.decode(
            value, key, algorithms=[ALGORITHM], options={"verify_exp": False},
            leeway=0,
        )  # fmt: skip
        if claims.get("pur") != PURPOSE or not isinstance(claims.get("seq"), int):
            return None
        request = Request(uuid.UUID(claims["sub"]), str(claims["adr"]), claims["seq"])
        expires = claims.get("exp")
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError):
        return None
    if not isinstance(expires, int) or now.timestamp() > expires:
        raise Expired()
    return request


async def confirm(session: AsyncSession, request: Request, clock: Clock) -> Outcome:
    """Confirm the pending grant the link names, in the caller's transaction."""
    profile = await session.get(Profile, request.profile_id)
    while profile is not None and profile.merged_into_id is not None:
        profile = await session.get(Profile, profile.merged_into_id)
    if profile is None:
        return Outcome.GONE
    lines = await ledger.ledger(session, profile.id)
    if any(line.confirms_seq == request.seq for line in lines):
        return Outcome.ALREADY
    if await ledger.open_request(session, profile.id, Channel.EMAIL, Purpose.MARKETING) != (
        request.seq
    ):
        return Outcome.GONE
    await ledger.record(
        session, profile.id,
        Entry(Channel.EMAIL, Purpose.MARKETING, Action.GRANT, Source.EMAIL_LINK,
              reply="followed the confirmation link", confirm=True,
              metadata={"address": request.address, "confirms": request.seq}),
        clock, audit.SystemActor("email-confirmation"),
    )  # fmt: skip
    return Outcome.CONFIRMED
