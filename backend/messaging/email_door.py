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
(recorded, not yet handed over: the server has not been given the recipient and the
e-mail) and `sending` (the server accepted the recipient; the e-mail is being handed
over). Once `in_flight` has passed, the same send key finds a `queued` e-mail never
handed over and sends it (the same message, the same Message-ID), and a `sending` one
as sent: the server may have taken it in the milliseconds it had it, and mail is not
sent twice on a guess. SMTP cannot be asked afterwards what it took (RFC 1047)."""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import email_confirmation, unsubscribe
from backend.consent.ledger import Channel
from backend.core.clock import Clock
from backend.core.identities import IdentityKind
from backend.core.logs import get_logger
from backend.core.models import HeldMessage, Identity, Message, Profile
from backend.messaging import email_feedback, email_message
from backend.messaging.door import (
    FollowUp,
    MessagePurpose,
    NotNow,
    Refusal,
    SendRefused,
    require_consent,
)
from backend.messaging.email_message import Dkim, Sender, Unsubscribe
from backend.messaging.guards import ContactGuard, Limits
from backend.messaging.held import Held, Outbound, earlier_send, guard_one
from backend.messaging.pacing import SendingPace
from backend.messaging.smtp import Mailer, MailInDoubt, MailRefused, MailUnavailable
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

    async def send(self, mail: OutboundEmail) -> Mailed | Held:
        """Check, record and send; the message's record, or the held message when the
        guards hold a marketing e-mail. Raises `SendRefused`."""
        if mail.purpose is MessagePurpose.COMPLIANCE:
            raise SendRefused(
                Refusal.NOT_AN_EMAIL_PURPOSE,
                "Compliance messages answer a keyword text; e-mail is marketing, "
                "transactional or conversational.",
            )
        marketing = mail.purpose is MessagePurpose.MARKETING
        if not self.sender.address or (marketing and not self.sender.postal_address):
            raise SendRefused(
                Refusal.EMAIL_NOT_CONFIGURED,
                "E-mail needs a From address (contact: email: in data/business.yml, or "
                "PARLEY_EMAIL_FROM) and, for marketing, the business's postal address "
                "(address: in data/business.yml), which every marketing e-mail shows.",
            )
        now = self.clock.now()
        async with self.sessions.begin() as session:
            earlier = await self._earlier(session, mail.send_key)
            if isinstance(earlier, Mailed | Held):
                return earlier
            if found := await email_feedback.suppressed(session, mail.to):
                raise SendRefused(
                    Refusal.UNDELIVERABLE_ADDRESS,
                    f"This address bounced for good on {found.suppressed_at.date().isoformat()} "
                    "and is suppressed: nothing more is sent to it.",
                )
            profile = await self.directory.find_by_identity(session, IdentityKind.EMAIL, mail.to)
            await require_consent(session, profile, Channel.EMAIL, mail.purpose, "e-mails")
            row = earlier if earlier is not None else await self._new_row(session, mail, profile)
            if isinstance(row, Held):
                return row
        links = self._unsubscribe(profile, mail.to, row.id) if marketing and profile else None
        built = email_message.compose(
            self.sender, mail.to, mail.subject, mail.text, mail.html, marketing, links,
            row.id, now, mail.in_reply_to,
        )  # fmt: skip
        return await self._hand_over(mail, row, built)

    async def _new_row(
        self, session: AsyncSession, mail: OutboundEmail, profile: Profile | None
    ) -> Message | Held:
        """The message recorded as queued, once the guards let it go now (held else)."""
        now = self.clock.now()
        held = await self._guard(session, mail, profile)
        if isinstance(held, SendRefused):
            raise held
        if held is not None:
            return held
        row = Message(
            profile_id=profile.id if profile else None,
            direction="outbound", channel="email", purpose=mail.purpose.value,
            to_address=mail.to, from_address=self.sender.address, subject=mail.subject,
            body=mail.text, media={}, status="queued", batch_id=uuid.uuid4(), part=1,
            parts=1, send_key=mail.send_key, created_at=now, updated_at=now,
            enrolment_id=mail.follow_up.enrolment_id if mail.follow_up else None,
            sequence_step=mail.follow_up.step if mail.follow_up else None,
            variant=mail.follow_up.variant if mail.follow_up else None,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        row.provider_sid = email_message.message_id(row.id, self.sender_domain)
        return row

    async def _hand_over(self, mail: OutboundEmail, row: Message, built: EmailMessage) -> Mailed:
        """Give the e-mail to the SMTP server, noting when the server has the recipient
        (`sending`), and record how it went. Raises SendRefused."""

        async def handing_over() -> None:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Message).where(Message.id == row.id).values(status="sending")
                )

        status, detail, refusal, bounced = "sent", None, None, False
        try:
            await self.pace.wait_turn("email:" + email_message.domain_of(mail.to).lower())
            detail = await self.mailer.send(
                email_message.as_bytes(built, self.dkim), self.sender.address, mail.to,
                handing_over,
            )  # fmt: skip
        except MailRefused as refused:
            status, detail, refusal = "failed", str(refused), Refusal.UNDELIVERABLE_ADDRESS
            bounced = email_feedback.hard_bounce(refused.code, refused.text)
        except MailUnavailable as error:
            status, detail, refusal = "failed", str(error), Refusal.MAIL_UNAVAILABLE
        except MailInDoubt as error:  # the server had it, then went silent
            log.warning("email.outcome_unknown", message_id=row.id, error=str(error))
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS,
                f"The mail server did not answer once it had the e-mail ({error}); it is "
                "taken as sent if it is not known otherwise by the time a retry asks.",
                [row],
            ) from error
        except SendRefused as busy:  # the domain's pace is full
            status, detail, refusal = "failed", str(busy), busy.kind
        async with self.sessions.begin() as session:
            stored = await session.get(Message, row.id)
            assert stored is not None
            stored.status, stored.updated_at = status, self.clock.now()
            if status == "failed":
                stored.error_message = detail
                if refusal is not Refusal.UNDELIVERABLE_ADDRESS:
                    stored.send_key = None  # nothing was taken: the same key may try again
            if bounced:  # "no such mailbox", at once: as a provider's hard bounce
                await email_feedback.record(
                    session,
                    email_feedback.Feedback(
                        email_feedback.Kind.BOUNCE, mail.to, "smtp",
                        message_id=stored.provider_sid, detail={"reason": detail},
                    ),
                    self.clock,
                )  # fmt: skip
        if refusal is not None:
            log.warning("email.not_sent", message_id=row.id, reason=refusal.value)
            raise SendRefused(refusal, _refusal_text(refusal, detail or ""), [stored])
        log.info("email.sent", message_id=row.id, purpose=mail.purpose.value)
        return Mailed(stored, repeated=False)

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

    def _unsubscribe(self, profile: Profile, address: str, message: int) -> Unsubscribe:
        ticket = unsubscribe.Ticket(profile.id, address, message)
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
                return found  # never handed over: this send takes it up
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS, "An e-mail with this send key is on its way.", [found]
            )
        if found.status == "sending":
            log.warning("email.outcome_unknown", message_id=found.id)
        return Mailed(found, repeated=True)

    async def _guard(
        self, session: AsyncSession, mail: OutboundEmail, profile: Profile | None
    ) -> Held | SendRefused | None:
        if mail.purpose is not MessagePurpose.MARKETING or profile is None:
            return None
        wanted = Outbound(
            "email", mail.to, mail.text, mail.purpose.value, mail.send_key, mail.if_not_now,
            mail.requested_by, details={"subject": mail.subject, "html": mail.html},
        )  # fmt: skip
        return await guard_one(
            session, self.guard, wanted, profile.id, mail.limits, self.clock.now(), "e-mails"
        )


def _refusal_text(refusal: Refusal, detail: str) -> str:
    if refusal is Refusal.UNDELIVERABLE_ADDRESS:
        return f"The mail server refused this address for good: {detail}."
    if refusal is Refusal.MAIL_UNAVAILABLE:
        return f"The mail server could not take the e-mail now ({detail}); try again later."
    return detail
