"""E-mails people send to the business: replies to follow-ups and to agents, and the
unsubscribe requests a mail app sends to the `mailto:` of `List-Unsubscribe`.

Each is recorded once (per Message-ID) as an inbound message on the `email` channel,
under the sender's profile (created if the address is new), linked to the e-mail of
ours it answers (`In-Reply-To: <parley.N@…>`). A recorded e-mail is a reply: the
sequences the person is in end at their next step (`exit_when: replied`). One whose
subject is "unsubscribe" withdraws e-mail marketing consent instead, recorded in the
ledger with its evidence, and counts as no reply (`keyword` STOP, as a text's).

Where the e-mails come from is the provider's business (backend.messaging.mailgun reads
Mailgun's inbound route); what a reply starts, a hand-off for a person to answer by
e-mail, is backend.handoffs.email_replies'."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import unsubscribe
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import Message
from backend.people.profiles import ProfileDirectory

log = get_logger(__name__)

# The Message-ID of an e-mail Parley sent (backend.messaging.email_message.message_id).
_OURS = re.compile(r"<parley\.(\d+)@[^>]+>")
# What mail apps put in the subject of the List-Unsubscribe mailto (we ask for it).
_UNSUBSCRIBE = re.compile(r"\s*unsubscribe\s*", re.IGNORECASE)
STOP = "STOP"


@dataclass(frozen=True)
class InboundEmail:
    sender: str  # the From address, normalised
    recipient: str
    subject: str
    text: str  # the person's words, without the quoted e-mail they answer
    message_id: str | None  # the e-mail's Message-ID header
    in_reply_to: str | None  # the Message-ID it answers (In-Reply-To, else References)


@dataclass(frozen=True)
class ReceivedEmail:
    message: Message
    profile_id: uuid.UUID
    repeated: bool  # delivered before (the same Message-ID): nothing new was done
    unsubscribed: bool  # an unsubscribe request, not a reply

    @property
    def is_reply(self) -> bool:
        return not self.unsubscribed


def provider_key(mail: InboundEmail) -> str:
    """What makes a delivery the same e-mail again: its Message-ID (hashed, so that any
    length fits), else its sender, subject and words."""
    seen = mail.message_id or f"{mail.sender}\n{mail.subject}\n{mail.text}"
    return "email:" + hashlib.sha256(seen.encode()).hexdigest()[:58]


@dataclass
class EmailInbox:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory

    async def receive(self, mail: InboundEmail) -> ReceivedEmail:
        """Record the e-mail once and, for an unsubscribe request, withdraw consent, in
        one transaction."""
        key = provider_key(mail)
        try:
            received = await self._record(mail, key)
        except IntegrityError:  # the same e-mail, recorded meanwhile by another delivery
            async with self.sessions() as session:
                earlier = await _earlier(session, key)
            if earlier is None:
                raise
            return earlier
        log.info(
            "email.received", message_id=received.message.id,
            sender=redact(IdentityKind.EMAIL, mail.sender), unsubscribe=received.unsubscribed,
        )  # fmt: skip
        return received

    async def _record(self, mail: InboundEmail, key: str) -> ReceivedEmail:
        now = self.clock.now()
        asked_to_stop = bool(_UNSUBSCRIBE.fullmatch(mail.subject))
        async with self.sessions.begin() as session:
            if earlier := await _earlier(session, key):
                return earlier
            identified = await self.directory.identify(
                session, kind=IdentityKind.EMAIL, address=mail.sender
            )
            profile_id = identified.profile.id
            answered = await _ours(session, mail.in_reply_to)
            row = Message(
                profile_id=profile_id, direction="inbound", channel="email", purpose=None,
                to_address=mail.recipient, from_address=mail.sender, subject=mail.subject[:998],
                body=mail.text,
                media={"message_id": mail.message_id, "in_reply_to": mail.in_reply_to},
                status="received", provider_sid=key, keyword=STOP if asked_to_stop else None,
                in_reply_to_id=answered, batch_id=uuid.uuid4(), part=1, parts=1, turn="done",
                turn_attempts=0, created_at=now, updated_at=now,
            )  # fmt: skip
            session.add(row)
            await session.flush()
            if asked_to_stop:
                ticket = unsubscribe.Ticket(profile_id, mail.sender, answered)
                await unsubscribe.unsubscribe(
                    session, ticket, unsubscribe.Method.MAILTO, self.clock
                )
        return ReceivedEmail(row, profile_id, False, asked_to_stop)


async def _earlier(session: AsyncSession, key: str) -> ReceivedEmail | None:
    """The e-mail as recorded at an earlier delivery, if it was."""
    found = await session.scalar(select(Message).where(Message.provider_sid == key))
    if found is None or found.profile_id is None:
        return None
    return ReceivedEmail(found, found.profile_id, True, found.keyword == STOP)


async def _ours(session: AsyncSession, message_id: str | None) -> int | None:
    """The id of our e-mail that `message_id` names, if it is one of ours."""
    found = _OURS.search(message_id or "")
    if found is None:
        return None
    number = int(found.group(1))
    exists: int | None = await session.scalar(
        select(Message.id).where(Message.id == number, Message.channel == "email")
    )
    return exists
