"""Unsubscribing from marketing e-mail, without signing in: from the link every
marketing e-mail shows, or the one-click POST its `List-Unsubscribe` header offers
(RFC 8058), which mail apps send when the person presses their own Unsubscribe (or the
e-mail to the header's mailto, which older apps send instead).

The link carries a token signed with a key derived from the installation's secret key
(HS256, pyjwt), naming the person, the address and the e-mail it came in: nobody can
unsubscribe someone else by guessing, and nothing but the token is needed. It does not
expire: a link must work for as long as someone may open an old e-mail (CAN-SPAM asks
at least 30 days). Unsubscribing withdraws e-mail marketing consent at once, recorded
in the ledger with its evidence (how, from which e-mail); doing it again changes
nothing."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass
from enum import StrEnum

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger
from backend.consent.ledger import Action, Channel, Entry, Purpose, Source, State
from backend.core import audit
from backend.core.clock import Clock
from backend.core.models import Profile

PURPOSE = "email-unsubscribe"
ALGORITHM = "HS256"


class Method(StrEnum):
    LINK = "link"  # the link in the e-mail, then the page's button
    ONE_CLICK = "one-click"  # RFC 8058: the mail app's own button
    MAILTO = "mailto"  # an e-mail to List-Unsubscribe's mailto (messaging.email_inbound)


@dataclass(frozen=True)
class Ticket:
    """Whose unsubscribe a token is."""

    profile_id: uuid.UUID
    address: str
    message_id: int | None


def signing_key(secret_key: bytes) -> bytes:
    """A key for these tokens alone, derived from the installation's secret key."""
    return hmac.new(secret_key, b"parley email unsubscribe", hashlib.sha256).digest()


def token(key: bytes, ticket: Ticket) -> str:
    claims: dict[str, str | int] = {
        "pur": PURPOSE,
        "sub": str(ticket.profile_id),
        "adr": ticket.address,
    }
    if ticket.message_id is not None:
        claims["msg"] = ticket.message_id
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read(key: bytes, value: str) -> Ticket | None:
    """The ticket a token names, or None for anything that is not one of ours."""
    try:
        claims = jwt.decode(value, key, algorithms=[ALGORITHM])
        if claims.get("pur") != PURPOSE:
            return None
        message = claims.get("msg")
        shown = message if isinstance(message, int) else None
        return Ticket(uuid.UUID(claims["sub"]), str(claims["adr"]), shown)
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Unsubscribed:
    profile_id: uuid.UUID
    address: str
    already: bool  # they had unsubscribed (or never agreed): nothing new was recorded


async def unsubscribe(
    session: AsyncSession, ticket: Ticket, method: Method, clock: Clock
) -> Unsubscribed | None:
    """Withdraw the person's e-mail marketing consent, in the caller's transaction. None
    when the person is gone (erased); a merged person's survivor is the one asked."""
    profile = await session.get(Profile, ticket.profile_id)
    while profile is not None and profile.merged_into_id is not None:
        profile = await session.get(Profile, profile.merged_into_id)
    if profile is None:
        return None
    current = await ledger.state(session, profile.id, Channel.EMAIL, Purpose.MARKETING)
    if current in (State.WITHDRAWN, State.NONE):
        return Unsubscribed(profile.id, ticket.address, already=True)
    await ledger.record(
        session,
        profile.id,
        Entry(
            Channel.EMAIL, Purpose.MARKETING, Action.WITHDRAW, Source.UNSUBSCRIBE,
            metadata={"method": method.value, "address": ticket.address,
                      "message_id": ticket.message_id},
        ),
        clock,
        audit.SystemActor("email-unsubscribe"),
    )  # fmt: skip
    return Unsubscribed(profile.id, ticket.address, already=False)
