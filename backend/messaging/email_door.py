"""The one door for outbound e-mail.

Every e-mail Parley sends leaves through `EmailDoor.send`: it checks the person's
e-mail consent at the moment of sending (marketing needs a confirmed grant;
transactional and conversational go unless they withdrew), and for marketing the same
quiet hours and frequency cap as every proactive message (held, or refused with when it
may go); records the message (channel `email`) before it goes; waits for the receiving
domain's turn (`email_domain_per_second`, shared by every replica); builds it
(backend.messaging.email_message: footer, List-Unsubscribe, DKIM) and hands it to the
SMTP server. The same send key again is the same send, answered from the record.

Outcomes: accepted by the server (`sent`); refused for good, a 5xx such as "no such
mailbox" (`failed`, 422 undeliverable-address); or the server not reached or asking to
try later (`failed`, 502 mail-unavailable), in which case the send key is freed so that
a retry with the same key sends it.

A process may stop in the middle of a send. The record says how far it got: `queued`
(recorded; the server keeps nothing yet) and `sending` (the server has all of the
e-mail but its final line, written right after the mark: backend.messaging.smtp). Once
`in_flight` has passed, the same send key takes over a `queued` e-mail (the same
message, the same Message-ID; only one sender can, and the one it was taken from
abandons it) and answers a `sending` one as sent: mail is not sent twice on a guess,
and SMTP cannot be asked afterwards what it took (RFC 1047)."""

from __future__ import annotations

import asyncio
import contextlib
import html
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message as MimeMessage

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import email_confirmation, unsubscribe
from backend.consent import ledger as consent
from backend.consent.ledger import Channel
from backend.core.clock import Clock
from backend.core.identities import IdentityKind
from backend.core.logs import get_logger
from backend.core.models import HeldMessage, Identity, Message
from backend.messaging import email_feedback, email_message
from backend.messaging.door import (
    FollowUp,
    MessagePurpose,
    NotNow,
    Refusal,
    SendRefused,
    as_answer,
    refuse_unless_allowed,
)
from backend.messaging.email_message import Dkim, Sender, Unsubscribe
from backend.messaging.guards import ContactGuard, Limits, Wanted
from backend.messaging.held import (
    Held,
    Outbound,
    earlier_held,
    earlier_send,
    hold_or_refuse,
)
from backend.messaging.pacing import SendingPace
from backend.messaging.smtp import (
    Envelope,
    Mailer,
    MailInDoubt,
    MailRefused,
    NotOurs,
)
from backend.people.profiles import ProfileDirectory

log = get_logger(__name__)

MAX_SUBJECT = 200


@dataclass(frozen=True)
class OutboundEmail:
    to: str  # an e-mail address, normalised (backend.core.identities)
    subject: str
    text: str
    purpose: MessagePurpose
    html: str | None = None  # the HTML body; None: made from the text
    send_key: str | None = None
    follow_up: FollowUp | None = None
    if_not_now: NotNow = NotNow.HOLD
    limits: Limits | None = None
    requested_by: str | None = None
    # The Message-ID of the person's e-mail this answers (an agent's reply): the mail
    # app shows the answer in the same thread.
    in_reply_to: str | None = None


@dataclass(frozen=True)
class Mailed:
    message: Message
    repeated: bool  # the send key was used before: this is the earlier send's record

    @property
    def messages(self) -> list[Message]:
        return [self.message]


@dataclass
class EmailDoor:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    guard: ContactGuard
    mailer: Mailer
    pace: SendingPace  # per receiving domain
    sender: Sender
    public_url: str  # where unsubscribe links point (the backend as people reach it)
    unsubscribe_key: bytes
    confirmation_key: bytes
    dkim: Dkim | None = None
    # How long a send may take from its record to the server's answer (the domain's
    # pace, then the SMTP timeout): until then a message in the middle of it is on its
    # way, after that its process stopped.
    in_flight: timedelta = timedelta(seconds=90)

    def _unsendable(self, mail: OutboundEmail) -> SendRefused | None:
        """Why no e-mail of this kind can go from here at all, if so."""
        if mail.purpose is MessagePurpose.COMPLIANCE:
            return SendRefused(
                Refusal.NOT_AN_EMAIL_PURPOSE,
                "Compliance messages answer a keyword text; e-mail is marketing, "
                "transactional or conversational.",
            )
        marketing = mail.purpose is MessagePurpose.MARKETING
        if not self.sender.address or (marketing and not self.sender.postal_address):
            return SendRefused(
                Refusal.EMAIL_NOT_CONFIGURED,
                "E-mail needs a From address (contact: email: in data/business.yml, or "
                "PARLEY_EMAIL_FROM) and, for marketing, the business's postal address "
                "(address: in data/business.yml), which every marketing e-mail shows.",
            )
        return None

    async def send_many(self, mails: Sequence[OutboundEmail]) -> list[Mailed | Held | SendRefused]:
        """`send` for many e-mails at once, each answered in its place: checked and
        recorded in one transaction, handed over side by side, their outcomes stored in
        one transaction. An e-mail whose send key was used before goes on its own."""
        results: list[Mailed | Held | SendRefused | None] = [self._unsendable(m) for m in mails]
        now = self.clock.now()
        try:
            async with self.sessions.begin() as session:
                fresh = await self._record_many(session, mails, results, now)
        except IntegrityError:
            # A send key taken by someone else meanwhile: each e-mail on its own.
            return [await as_answer(self.send(m)) for m in mails]
        built = [
            (mails[i], row, self._compose(mails[i], owner, row, now)) for i, row, owner in fresh
        ]
        for (i, _, _), answer in zip(fresh, await self._hand_over_all(built), strict=True):
            results[i] = answer
        for i, mail in enumerate(mails):
            if results[i] is None:  # its send key was used before
                results[i] = await as_answer(self.send(mail))
        return [r for r in results if r is not None]

    async def _record_many(
        self,
        session: AsyncSession,
        mails: Sequence[OutboundEmail],
        results: list[Mailed | Held | SendRefused | None],
        now: datetime,
    ) -> list[tuple[int, Message, uuid.UUID | None]]:
        """`send`'s checks for many e-mails in a few queries: the refused and held ones
        answered in `results`; the ones to send recorded (index, record, owner). Those
        whose send key was used before are left for `send`."""
        keys = [m.send_key for m in mails if m.send_key]
        used = set(await earlier_held(session, keys)) | set(
            await session.scalars(select(Message.send_key).where(Message.send_key.in_(keys)))
        )
        todo = [i for i, m in enumerate(mails) if results[i] is None and m.send_key not in used]
        allowed = await self._allowed(session, mails, todo, results)
        return await self._record(session, mails, allowed, results, now)

    async def _allowed(
        self,
        session: AsyncSession,
        mails: Sequence[OutboundEmail],
        indexes: Sequence[int],
        results: list[Mailed | Held | SendRefused | None],
    ) -> dict[int, uuid.UUID | None]:
        """Suppression and consent, at the moment of sending, for these e-mails read
        together: the refused ones answered in `results`; the owner of each that may go."""
        addresses = {mails[i].to for i in indexes}
        gone = await email_feedback.suppressed_among(session, addresses)
        owners = await self.directory.ids_by_identity(session, IdentityKind.EMAIL, addresses)
        consents = await consent.current_of(session, set(owners.values()))
        allowed: dict[int, uuid.UUID | None] = {}
        for i in indexes:
            mail, owner = mails[i], owners.get(mails[i].to)
            try:
                if mail.to in gone:
                    raise _suppressed()
                known = consents.get(owner, {}) if owner else {}
                refuse_unless_allowed(owner, known, Channel.EMAIL, mail.purpose, "e-mails")
            except SendRefused as refused:
                results[i] = refused
                continue
            allowed[i] = owner
        return allowed

    async def _record(
        self,
        session: AsyncSession,
        mails: Sequence[OutboundEmail],
        allowed: dict[int, uuid.UUID | None],
        results: list[Mailed | Held | SendRefused | None],
        now: datetime,
    ) -> list[tuple[int, Message, uuid.UUID | None]]:
        """The guards for the marketing ones (held or refused in `results`), then the
        others recorded as queued: (index, record, owner)."""
        guarded = [
            (i, o) for i, o in allowed.items() if o and mails[i].purpose is MessagePurpose.MARKETING
        ]
        holds = await self.guard.check(
            session, [Wanted(o, mails[i].limits) for i, o in guarded], now
        )
        held = {i: (o, hold) for (i, o), hold in zip(guarded, holds, strict=True) if hold}
        fresh: list[tuple[int, Message, uuid.UUID | None]] = []
        for i, owner in allowed.items():
            if i in held:
                who, hold = held[i]
                results[i] = hold_or_refuse(
                    session, self._outbound(mails[i]), who, hold, now, "e-mails"
                )
                continue
            row = self._row(mails[i], owner, now)
            session.add(row)
            fresh.append((i, row, owner))
        await session.flush()
        for _, row, _ in fresh:
            row.provider_sid = email_message.message_id(row.id, self.sender_domain)
        return fresh

    async def send(self, mail: OutboundEmail) -> Mailed | Held:
        """Check, record and send; the message's record, or the held message when the
        guards hold a marketing e-mail. Raises `SendRefused`."""
        if unsendable := self._unsendable(mail):
            raise unsendable
        now = self.clock.now()
        results: list[Mailed | Held | SendRefused | None] = [None]
        row: Message | None = None
        owner: uuid.UUID | None = None
        async with self.sessions.begin() as session:
            earlier = await self._earlier(session, mail.send_key)
            if isinstance(earlier, Mailed | Held):
                return earlier
            allowed = await self._allowed(session, [mail], [0], results)
            if allowed:
                owner = allowed[0]
                if earlier is not None:  # taken up again: the guards let it go then
                    row = earlier
                elif fresh := await self._record(session, [mail], allowed, results, now):
                    row = fresh[0][1]
        if isinstance(results[0], SendRefused):
            raise results[0]
        if isinstance(results[0], Held):
            return results[0]
        assert row is not None
        return await self._hand_over(mail, row, self._compose(mail, owner, row, now))

    def _compose(
        self, mail: OutboundEmail, owner: uuid.UUID | None, row: Message, now: datetime
    ) -> MimeMessage:
        marketing = mail.purpose is MessagePurpose.MARKETING
        links = self._unsubscribe(owner, mail.to, row.id) if marketing and owner else None
        return email_message.compose(
            self.sender, mail.to, mail.subject, mail.text, mail.html, marketing, links,
            row.id, now, mail.in_reply_to,
        )  # fmt: skip

    def _row(self, mail: OutboundEmail, owner: uuid.UUID | None, now: datetime) -> Message:
        """The record of an e-mail about to go (queued)."""
        return Message(
            profile_id=owner,
            direction="outbound", channel="email", purpose=mail.purpose.value,
            to_address=mail.to, from_address=self.sender.address, subject=mail.subject,
            body=mail.text, media={}, status="queued", batch_id=uuid.uuid4(), part=1,
            parts=1, send_key=mail.send_key, created_at=now, updated_at=now,
            enrolment_id=mail.follow_up.enrolment_id if mail.follow_up else None,
            sequence_step=mail.follow_up.step if mail.follow_up else None,
            variant=mail.follow_up.variant if mail.follow_up else None,
        )  # fmt: skip

    async def _hand_over(self, mail: OutboundEmail, row: Message, built: MimeMessage) -> Mailed:
        """Give one e-mail to the SMTP server and record how it went. Raises SendRefused."""
        [answer] = await self._hand_over_all([(mail, row, built)])
        if isinstance(answer, SendRefused):
            raise answer
        return answer

    async def _hand_over_all(
        self, items: Sequence[tuple[OutboundEmail, Message, MimeMessage]]
    ) -> list[Mailed | SendRefused]:
        """Give recorded e-mails to the SMTP server (each after its domain's turn),
        noting those the server has the recipient of as `sending` before their contents
        go, and record how each went, in one transaction."""
        turns = await asyncio.gather(
            *(self.pace.wait_turn("email:" + email_message.domain_of(m.to).lower())
              for m, _, _ in items),
            return_exceptions=True,
        )  # fmt: skip
        if failed := [
            t for t in turns if isinstance(t, BaseException) and not isinstance(t, SendRefused)
        ]:
            raise failed[0]  # the database: the records stay queued, to be taken up again
        going = [i for i, turn in enumerate(turns) if not isinstance(turn, SendRefused)]

        @contextlib.asynccontextmanager
        async def handing_over(indexes: list[int]) -> AsyncIterator[list[int]]:
            """Mark the e-mails as going, each only if its record is still as this send
            left it (queued, last touched by this send): a send taken over by another
            sender meanwhile is left to that one. The mark commits as the block that
            writes the e-mails' final lines ends, so it holds exactly if they went."""
            rows = {items[going[i]][1].id: (i, items[going[i]][1].updated_at) for i in indexes}
            async with self.sessions.begin() as session:
                marked = await session.scalars(
                    update(Message)
                    .where(
                        Message.status == "queued",
                        or_(
                            *(
                                and_(Message.id == id_, Message.updated_at == at)
                                for id_, (_, at) in rows.items()
                            )
                        ),
                    )
                    .values(status="sending")
                    .returning(Message.id)
                    .execution_options(synchronize_session=False)
                )
                yield [rows[id_][0] for id_ in marked]

        envelopes = [
            Envelope(email_message.as_bytes(items[i][2], self.dkim), self.sender.address,
                     items[i][0].to)
            for i in going
        ]  # fmt: skip
        answers: list[object] = list(turns)
        for i, answer in zip(
            going, await self.mailer.send_all(envelopes, handing_over), strict=True
        ):
            answers[i] = answer
        results: list[Mailed | SendRefused] = []
        async with self.sessions.begin() as session:
            stored = {
                row.id: row
                for row in await session.scalars(
                    select(Message).where(Message.id.in_([row.id for _, row, _ in items]))
                )
            }
            for (mail, row, _), said in zip(items, answers, strict=True):
                results.append(await self._outcome(session, mail, stored[row.id], said))
        return results

    async def _outcome(
        self, session: AsyncSession, mail: OutboundEmail, row: Message, answer: object
    ) -> Mailed | SendRefused:
        """How one hand-over went, on its record (in the caller's transaction)."""
        if isinstance(answer, NotOurs):
            return SendRefused(
                Refusal.SEND_IN_PROGRESS, "Another sender took this e-mail over.", [row]
            )
        if isinstance(answer, MailInDoubt):  # the server had it, then went silent
            log.warning("email.outcome_unknown", message_id=row.id, error=str(answer))
            return SendRefused(
                Refusal.SEND_IN_PROGRESS,
                f"The mail server did not answer once it had the e-mail ({answer}); it is "
                "taken as sent if it is not known otherwise by the time a retry asks.",
                [row],
            )
        row.updated_at = self.clock.now()
        if isinstance(answer, str):
            row.status = "sent"
            log.info("email.sent", message_id=row.id, purpose=mail.purpose.value)
            return Mailed(row, repeated=False)
        row.status, row.error_message = "failed", str(answer)
        if isinstance(answer, MailRefused):
            refusal = Refusal.UNDELIVERABLE_ADDRESS
            if email_feedback.hard_bounce(answer.code, answer.text):
                # "No such mailbox", at once: as a provider's hard bounce.
                await email_feedback.record(
                    session,
                    email_feedback.Feedback(
                        email_feedback.Kind.BOUNCE, mail.to, "smtp",
                        message_id=row.provider_sid, detail={"reason": str(answer)},
                    ),
                    self.clock,
                )  # fmt: skip
        else:
            # Not taken (the server unreachable or busy, the domain's pace full): the
            # same key may try again.
            refusal = answer.kind if isinstance(answer, SendRefused) else Refusal.MAIL_UNAVAILABLE
            row.send_key = None
        log.warning("email.not_sent", message_id=row.id, reason=refusal.value)
        return SendRefused(refusal, _refusal_text(refusal, str(answer)), [row])

    async def deliver_held(self, held: HeldMessage, send_key: str) -> int:
        """Send a held e-mail now, if it may go (held.HeldMessages)."""
        details = held.media.get("email", {})
        sent = await self.send(
            OutboundEmail(
                to=held.to_address, subject=str(details.get("subject", "")), text=held.body,
                html=details.get("html"), purpose=MessagePurpose(held.purpose),
                send_key=send_key, if_not_now=NotNow.REFUSE, requested_by=held.created_by,
            )
        )  # fmt: skip
        if isinstance(sent, Held):
            raise AssertionError("a release is never held again")  # pragma: no cover
        return sent.message.id

    async def ask_to_confirm(self, profile_id: uuid.UUID, seq: int) -> None:
        """E-mail the person the link that confirms their e-mail marketing grant
        (ledger line `seq`): the double opt-in. Not sent (and logged) without an
        address; sent once per grant (its send key)."""
        async with self.sessions() as session:
            address = await session.scalar(
                select(Identity.address)
                .where(Identity.profile_id == profile_id, Identity.kind == IdentityKind.EMAIL)
                .order_by(Identity.created_at.desc())
                .limit(1)
            )
        if address is None:
            log.warning("consent.confirmation_not_asked", profile_id=str(profile_id),
                        reason="no e-mail address")  # fmt: skip
            return
        request = email_confirmation.Request(profile_id, address, seq)
        value = email_confirmation.token(self.confirmation_key, request, self.clock.now())
        link = f"{self.public_url.rstrip('/')}/email/confirm/{value}"
        name = self.sender.name
        text = (
            f"Hello,\n\nPlease confirm that you want product news and offers from {name} "
            f"by e-mail at {address}:\n\n{link}\n\nThe link works for "
            f"{email_confirmation.VALID_FOR.days} days. If you did not ask for this, ignore "
            "this e-mail: you will get nothing more from us."
        )
        body = (
            f"<p>Hello,</p><p>Please confirm that you want product news and offers from "
            f"{html.escape(name)} by e-mail at <b>{html.escape(address)}</b>.</p>"
            f'<p><a href="{html.escape(link)}" style="display:inline-block;padding:.6em 1.2em;'
            'background:#2554c7;color:#fff;text-decoration:none;border-radius:4px">'
            "Yes, send me e-mails</a></p>"
            f"<p>The link works for {email_confirmation.VALID_FOR.days} days. If you did not "
            "ask for this, ignore this e-mail: you will get nothing more from us.</p>"
        )
        try:
            await self.send(
                OutboundEmail(
                    to=address, subject=f"Please confirm: e-mails from {name}", text=text,
                    html=body, purpose=MessagePurpose.TRANSACTIONAL,
                    send_key=f"double-opt-in:{seq}",
                )
            )  # fmt: skip
        except SendRefused as refused:
            log.warning("consent.confirmation_not_sent", profile_id=str(profile_id),
                        reason=refused.kind.value)  # fmt: skip

    @property
    def sender_domain(self) -> str:
        return email_message.domain_of(self.sender.address)

    def _unsubscribe(self, owner: uuid.UUID, address: str, message: int) -> Unsubscribe:
        ticket = unsubscribe.Ticket(owner, address, message)
        value = unsubscribe.token(self.unsubscribe_key, ticket)
        return Unsubscribe(
            url=f"{self.public_url.rstrip('/')}/email/unsubscribe/{value}",
            mailto=f"mailto:{self.sender.address}?subject=unsubscribe",
        )

    async def _earlier(
        self, session: AsyncSession, key: str | None
    ) -> Mailed | Held | Message | None:
        """What was sent under this send key: its record, or a queued message that was
        never handed over (its process stopped) to send now. Raises SEND_IN_PROGRESS
        while another send of it may still be under way."""
        found = await earlier_send(session, key, "email")
        if not isinstance(found, Message):
            return found
        now = self.clock.now()
        if found.status in ("queued", "sending") and now - found.updated_at < self.in_flight:
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS, "An e-mail with this send key is on its way.", [found]
            )
        if found.status == "queued":
            taken = await session.execute(
                update(Message)
                .where(Message.id == found.id, Message.status == "queued",
                       Message.updated_at == found.updated_at)
                .values(updated_at=now)
            )  # fmt: skip
            if getattr(taken, "rowcount", 0) == 1:
                log.info("email.resumed", message_id=found.id)
                found.updated_at = now  # as this send left it: see handing_over
                return found  # never handed over: this send takes it up
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS, "An e-mail with this send key is on its way.", [found]
            )
        if found.status == "sending":
            log.warning("email.outcome_unknown", message_id=found.id)
        return Mailed(found, repeated=True)

    @staticmethod
    def _outbound(mail: OutboundEmail) -> Outbound:
        """The e-mail as a held message keeps it."""
        return Outbound(
            "email", mail.to, mail.text, mail.purpose.value, mail.send_key, mail.if_not_now,
            mail.requested_by, details={"subject": mail.subject, "html": mail.html},
        )  # fmt: skip


def _suppressed() -> SendRefused:
    return SendRefused(
        Refusal.UNDELIVERABLE_ADDRESS,
        "This address bounced for good and is suppressed: nothing more is sent to it.",
    )


def _refusal_text(refusal: Refusal, detail: str) -> str:
    if refusal is Refusal.UNDELIVERABLE_ADDRESS:
        return f"The mail server refused this address for good: {detail}."
    if refusal is Refusal.MAIL_UNAVAILABLE:
        return f"The mail server could not take the e-mail now ({detail}); try again later."
    return detail
