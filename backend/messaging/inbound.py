"""Texts people send: recorded once per Twilio MessageSid, before Twilio is told they
arrived, and the compliance keywords (STOP, START, HELP and their synonyms) applied in
that same transaction, before any NLU sees them.

- STOP and its synonyms withdraw SMS consent (marketing and transactional);
- START and UNSTOP give it back: transactional at once, marketing only if the person
  had agreed to it before (START is their own reply from that number, so it also
  confirms a pending double opt-in); YES does the same, but only while something is
  pending or withdrawn, since otherwise "yes" is an answer to the bot;
- HELP and INFO change nothing.
Each is answered by exactly one confirmation text through the one door, unless
Twilio's Advanced Opt-Out already answered it (the webhook then carries `OptOutType`).

Every text is recorded with its answer owed (`turn` pending): backend.messaging.text_turns gives
it, the keyword's confirmation (`KeywordConfirmations`) or the bot's turn, exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, Purpose, Source, State
from backend.core import audit
from backend.core.clock import Clock
from backend.core.database import first_in_line
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import ConsentEvent, Identity, Message
from backend.messaging.door import MessagePurpose, Refusal, SendRefused
from backend.messaging.sms_door import OutboundText, SmsDoor
from backend.messaging.text_turns import AnswerFailed, PendingText
from backend.people.profiles import ProfileDirectory
from message_rules.sms import Keyword, keyword_of

log = get_logger(__name__)

# Who the audit log says recorded a keyword text's consent change.
KEYWORD_TEXTS = audit.SystemActor("sms")

# Door refusals that may pass: Twilio unreachable, the same send in progress, the pace.
RETRY_KINDS = frozenset({Refusal.TWILIO_UNAVAILABLE, Refusal.SEND_IN_PROGRESS, Refusal.SENDER_BUSY})
# Twilio's OptOutType values (Advanced Opt-Out, custom keywords in any language).
OPT_OUT_TYPES = {"STOP": Keyword.STOP, "START": Keyword.START, "HELP": Keyword.HELP}


@dataclass(frozen=True)
class KeywordReplies:
    """What the business answers to each keyword (from data/business.yml)."""

    stopped: str
    started: str
    help: str
    # The text that asks a person to confirm SMS marketing (double opt-in).
    confirm_request: str

    @classmethod
    def for_business(cls, name: str, sms_help: str) -> KeywordReplies:
        return cls(
            stopped=f"{name}: you are unsubscribed and will get no more texts from us. "
            "Reply START to subscribe again.",
            started=f"{name}: you are subscribed to our texts. Msg & data rates may apply. "
            "Reply HELP for help, STOP to opt out.",
            help=sms_help,
            confirm_request=f"{name}: reply YES to confirm you want marketing texts from us. "
            "Msg & data rates may apply. Reply HELP for help, STOP to opt out.",
        )

    def reply(self, keyword: Keyword) -> str:
        return {Keyword.STOP: self.stopped, Keyword.START: self.started}.get(keyword, self.help)


@dataclass(frozen=True)
class InboundText:
    sid: str
    from_: str  # E.164
    to: str
    body: str
    media_urls: Sequence[str] = ()
    opt_out_type: str | None = None


@dataclass(frozen=True)
class Received:
    message_id: int
    # None: the number is new, and gets its profile when the text is answered.
    profile_id: uuid.UUID | None
    duplicate: bool
    keyword: Keyword | None
    # True when the text was a keyword and is fully answered: the bot must not see it.
    handled: bool


@dataclass
class SmsInbox:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    # Called after a text is recorded with an answer owed (wakes backend.messaging.text_turns).
    on_recorded: Callable[[], None] = lambda: None

    async def receive(self, text: InboundText) -> Received:
        """Record the text once (per MessageSid) and apply its keyword, in one short
        transaction: Twilio waits for it. A text that is no keyword is one insert, which
        notes whose number it is; a number not known yet gets its profile when the text
        is answered (backend.messaging.text_turns)."""
        keyword = _keyword_of(text)
        try:
            with first_in_line():  # Twilio waits for this transaction
                if keyword is None:
                    received = await self._record(text)
                else:
                    received = await self._record_keyword(text, keyword)
        except IntegrityError:
            # The MessageSid is recorded already (Twilio delivered it again): once.
            async with self.sessions() as session:
                earlier = await self._earlier(session, text.sid)
            if earlier is None:
                raise
            return earlier
        log.info(
            "sms.received", profile_id=str(received.profile_id) if received.profile_id else None,
            message_id=received.message_id, sender=redact(IdentityKind.SMS, text.from_),
            keyword=received.keyword.value if received.keyword else None,
        )  # fmt: skip
        if _answer_owed(text, received.keyword):
            self.on_recorded()
        return received

    async def _record(self, text: InboundText) -> Received:
        """A text for the bot, in one statement (a repeated MessageSid breaks the unique
        constraint)."""
        async with self.sessions.begin() as session:
            message_id, profile_id = (
                await session.execute(
                    insert(Message)
                    .values(
                        **self._row(text, None),
                        profile_id=self.directory.owner_of(IdentityKind.SMS, text.from_),
                    )
                    .returning(Message.id, Message.profile_id)
                )
            ).one()
        return Received(message_id, profile_id, False, None, False)

    async def _record_keyword(self, text: InboundText, keyword: Keyword) -> Received:
        """A text that may be STOP, START or HELP: its sender's profile (created if
        new), the text, and the consent change, in one transaction (a repeated
        MessageSid breaks the unique constraint before the change is made)."""
        async with self.sessions.begin() as session:
            identified = await self.directory.identify(
                session, kind=IdentityKind.SMS, address=text.from_
            )
            profile_id = identified.profile.id
            confirmed = await self._confirm_keyword(session, profile_id, keyword, text)
            row = Message(profile_id=profile_id, **self._row(text, confirmed))
            session.add(row)
            await session.flush()
            if confirmed is not None:
                await self._apply(session, profile_id, confirmed, text)
        return Received(row.id, profile_id, False, confirmed, confirmed is not None)

    def _row(self, text: InboundText, keyword: Keyword | None) -> dict[str, Any]:
        now = self.clock.now()
        owed = _answer_owed(text, keyword)
        return dict(
            direction="inbound", channel="sms", purpose=None, to_address=text.to,
            from_address=text.from_, body=text.body,
            media={"urls": list(text.media_urls)} if text.media_urls else {},
            status="received", provider_sid=text.sid,
            keyword=keyword.value if keyword else None, batch_id=uuid.uuid4(),
            turn="pending" if owed else "done", turn_due_at=now if owed else None,
            turn_attempts=0, part=1, parts=1, created_at=now, updated_at=now,
        )  # fmt: skip

    async def attach_profile(self, text: PendingText) -> None:
        """Give the texts of a number that was new when they arrived its profile
        (created now if it is still new), before the bot answers them."""
        async with self.sessions.begin() as session:
            # Also notes the number as an SMS identity of a profile found by a call.
            identified = await self.directory.identify(
                session, kind=IdentityKind.SMS, address=text.sender
            )
            if text.profile_id is not None:
                return  # recorded with its profile: nothing to attach
            await session.execute(
                update(Message)
                .where(
                    Message.from_address == text.sender,
                    Message.direction == "inbound",
                    Message.profile_id.is_(None),
                )
                .values(profile_id=identified.profile.id)
                .execution_options(synchronize_session=False)
            )

    async def _earlier(self, session: AsyncSession, sid: str) -> Received | None:
        row = await session.scalar(select(Message).where(Message.provider_sid == sid))
        if row is None:
            return None
        keyword = Keyword(row.keyword) if row.keyword else None
        return Received(row.id, row.profile_id, True, keyword, keyword is not None)

    async def _confirm_keyword(
        self, session: AsyncSession, profile_id: uuid.UUID, keyword: Keyword, text: InboundText
    ) -> Keyword | None:
        """A bare YES is START only while something is pending or withdrawn: otherwise
        it is an answer to the bot."""
        if text.opt_out_type or not (
            keyword is Keyword.START and text.body.strip(" .!").upper() == "YES"
        ):
            return keyword
        marketing = await consent.state(session, profile_id, Channel.SMS, Purpose.MARKETING)
        chats = await consent.state(session, profile_id, Channel.SMS, Purpose.TRANSACTIONAL)
        if State.PENDING not in (marketing,) and State.WITHDRAWN not in (marketing, chats):
            return None
        return keyword

    async def _apply(
        self, session: AsyncSession, profile_id: uuid.UUID, keyword: Keyword, text: InboundText
    ) -> None:
        def entry(purpose: Purpose, action: Action, confirm: bool = False) -> consent.Entry:
            return consent.Entry(
                Channel.SMS, purpose, action, Source.SMS_KEYWORD, reply=text.body,
                metadata={"message_sid": text.sid}, confirm=confirm,
            )  # fmt: skip

        async def append(line: consent.Entry) -> None:
            await consent.record(session, profile_id, line, self.clock, KEYWORD_TEXTS)

        if keyword is Keyword.STOP:
            for purpose in (Purpose.MARKETING, Purpose.TRANSACTIONAL):
                await append(entry(purpose, Action.WITHDRAW))
        elif keyword is Keyword.START:
            chats = await consent.state(session, profile_id, Channel.SMS, Purpose.TRANSACTIONAL)
            if chats is State.WITHDRAWN:
                await append(entry(Purpose.TRANSACTIONAL, Action.GRANT))
            marketing = await consent.state(session, profile_id, Channel.SMS, Purpose.MARKETING)
            if marketing is State.PENDING:
                await append(entry(Purpose.MARKETING, Action.GRANT, confirm=True))
            elif marketing is State.WITHDRAWN and _granted_before(
                await consent.ledger(session, profile_id)
            ):
                # Asked from the person's own phone: the request and its confirmation.
                await append(entry(Purpose.MARKETING, Action.GRANT))
                await append(entry(Purpose.MARKETING, Action.GRANT, confirm=True))


def _answer_owed(text: InboundText, keyword: Keyword | None) -> bool:
    """The bot's turn, or the keyword's confirmation unless Twilio's Advanced Opt-Out
    gave it already."""
    return keyword is None or text.opt_out_type is None


def _keyword_of(text: InboundText) -> Keyword | None:
    if text.opt_out_type:
        return OPT_OUT_TYPES.get(text.opt_out_type.strip().upper())
    return keyword_of(text.body)


@dataclass
class KeywordConfirmations:
    """The one confirmation of a STOP, START or HELP text (backend.messaging.text_turns calls it,
    again after a crash: the send key makes sure it goes once)."""

    door: SmsDoor | None
    replies: KeywordReplies

    async def answer(self, text: PendingText) -> None:
        if self.door is None:
            raise AnswerFailed("sending texts is not configured", final=True)
        try:
            await self.door.send(
                OutboundText(
                    to=text.sender,
                    body=self.replies.reply(Keyword(text.keyword)),
                    purpose=MessagePurpose.COMPLIANCE,
                    in_reply_to=text.id,
                    send_key=f"keyword-reply:{text.id}",
                )
            )
        except SendRefused as refused:
            # Twilio unreachable, or the send in progress elsewhere: ask again later.
            # Anything else will not change: the consent change stands, unconfirmed.
            raise AnswerFailed(refused.kind, final=refused.kind not in RETRY_KINDS) from refused


def _granted_before(lines: Sequence[ConsentEvent]) -> bool:
    return any(
        line.channel == Channel.SMS
        and line.purpose == Purpose.MARKETING
        and line.action == Action.GRANT
        and (not line.pending or line.confirms_seq is not None)
        for line in lines
    )


async def ask_to_confirm(
    sessions: async_sessionmaker[AsyncSession],
    door: SmsDoor | None,
    replies: KeywordReplies,
    profile_id: uuid.UUID,
    seq: int,
) -> None:
    """Text the person the double opt-in question for ledger line `seq`; their YES
    confirms it (`SmsInbox`). Not asked (and logged) without a number or a door."""
    async with sessions() as session:
        number = await session.scalar(
            select(Identity.address)
            .where(Identity.profile_id == profile_id, Identity.kind == IdentityKind.SMS.value)
            .order_by(Identity.created_at.desc())
            .limit(1)
        )
    if number is None or door is None:
        reason = "no SMS number" if number is None else "sending is not configured"
        log.warning("consent.confirmation_not_asked", profile_id=str(profile_id), reason=reason)
        return
    try:
        await door.send(
            OutboundText(
                to=number,
                body=replies.confirm_request,
                purpose=MessagePurpose.TRANSACTIONAL,
                send_key=f"double-opt-in:{seq}",
            )
        )
    except SendRefused as refused:
        log.warning(
            "consent.confirmation_not_sent", profile_id=str(profile_id), reason=refused.kind
        )
