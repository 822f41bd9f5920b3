"""What became of e-mails after an SMTP server took them, as the mail provider (or the
server itself, at once) reports it:

- a **hard bounce** (the mailbox does not exist, permanently refused) marks the e-mail
  `failed` and suppresses the address: the e-mail door sends it nothing more, since
  sending again only hurts the sender's reputation with the mailbox providers;
- a **soft bounce** (a full mailbox, a server that said "later") is noted on the e-mail;
  the address stays;
- a **complaint** (the person pressed "this is spam") withdraws their e-mail marketing
  consent, recorded in the ledger with the provider's evidence.

Events come from `POST /api/v1/email/events` (a generic JSON form, for any provider
through a small adapter) and from Mailgun's signed webhook (`mailgun.py`); the e-mail
door reports an SMTP server's immediate "no such mailbox" the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger
from backend.consent.ledger import Action, Channel, Entry, Purpose, Source, State
from backend.core import audit
from backend.core.clock import Clock
from backend.core.identities import IdentityKind
from backend.core.logs import get_logger
from backend.core.models import EmailSuppression, Identity, Message

log = get_logger(__name__)


class Kind(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"


@dataclass(frozen=True)
class Feedback:
    kind: Kind
    address: str  # normalised
    source: str  # api, mailgun, smtp
    permanent: bool = True  # a bounce's: for good (hard) or for now (soft)
    message_id: str | None = None  # the Message-ID Parley gave the e-mail, if known
    detail: dict[str, Any] = field(default_factory=dict)  # what the provider said


class Outcome(StrEnum):
    SUPPRESSED = "suppressed"  # a hard bounce: nothing more goes to the address
    NOTED = "noted"  # a soft bounce: noted on the e-mail
    WITHDRAWN = "withdrawn"  # a complaint: e-mail marketing consent withdrawn
    ALREADY = "already"  # nothing new (suppressed or withdrawn before, or nobody known)


def normal_message_id(value: str | None) -> str | None:
    """`<id@host>` as Parley stores it; providers often drop the angle brackets."""
    if not value:
        return None
    value = value.strip()
    return value if value.startswith("<") else f"<{value}>"


async def record(session: AsyncSession, feedback: Feedback, clock: Clock) -> Outcome:
    """Apply one event, in the caller's transaction."""
    now = clock.now()
    message = None
    if (wanted := normal_message_id(feedback.message_id)) is not None:
        message = await session.scalar(select(Message).where(Message.provider_sid == wanted))
    said = str(feedback.detail.get("reason") or feedback.detail.get("description") or "")
    if feedback.kind is Kind.BOUNCE:
        if message is not None:
            message.error_message = f"bounced: {said}".strip()
            message.updated_at = now
            if feedback.permanent:
                message.status = "failed"
        if not feedback.permanent:
            return Outcome.NOTED
        if await session.get(EmailSuppression, feedback.address) is not None:
            return Outcome.ALREADY
        session.add(
            EmailSuppression(
                address=feedback.address, reason="hard-bounce", source=feedback.source,
                detail={**feedback.detail, "message_id": feedback.message_id},
                suppressed_at=now,
            )
        )  # fmt: skip
        await session.flush()
        log.info("email.suppressed", source=feedback.source)
        return Outcome.SUPPRESSED
    owner = await session.scalar(
        select(Identity.profile_id).where(
            Identity.kind == IdentityKind.EMAIL.value, Identity.address == feedback.address
        )
    )
    if owner is None:
        return Outcome.ALREADY
    state = await ledger.state(session, owner, Channel.EMAIL, Purpose.MARKETING)
    if state in (State.WITHDRAWN, State.NONE):
        return Outcome.ALREADY
    await ledger.record(
        session, owner,
        Entry(Channel.EMAIL, Purpose.MARKETING, Action.WITHDRAW, Source.EMAIL_COMPLAINT,
              reply="marked an e-mail as spam",
              metadata={"provider": feedback.source, "message_id": feedback.message_id,
                        "address": feedback.address, **feedback.detail}),
        clock, audit.SystemActor(f"email-{feedback.source}"),
    )  # fmt: skip
    return Outcome.WITHDRAWN


async def suppressed_among(session: AsyncSession, addresses: Iterable[str]) -> set[str]:
    """Which of these addresses are suppressed: nothing is sent to them."""
    wanted = set(addresses)
    if not wanted:
        return set()
    found = await session.scalars(
        select(EmailSuppression.address).where(EmailSuppression.address.in_(wanted))
    )
    return set(found)


def hard_bounce(code: int, text: str) -> bool:
    """An SMTP refusal that says the mailbox does not exist (RFC 3463's 5.1.x), rather
    than a policy or content refusal that another e-mail might pass."""
    return 500 <= code < 600 and text.lstrip().startswith("5.1.")
