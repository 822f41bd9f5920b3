"""The one door for outbound texts.

Every SMS Parley sends, a bot reply or a follow-up, leaves through `SmsDoor.send`:
it checks consent at the moment of sending, splits a long text at sentence boundaries,
records each part before it goes, waits for the sending number's turn (one pace shared
by every backend replica), sends through Twilio's REST API with the `twilio` library,
and keeps each message's delivery status as Twilio reports it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.base.exceptions import TwilioException, TwilioRestException

from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, Purpose, Source
from backend.core import audit
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.json_sql import json_number
from backend.core.logs import get_logger
from backend.core.models import ConsentEvent, HeldMessage, Message
from backend.messaging.door import (
    Accepted,
    FollowUp,
    MessagePurpose,
    NotNow,
    Refusal,
    SendRefused,
    as_answer,
    consent_needed,
    refuse_unless_allowed,
)
from backend.messaging.guards import ContactGuard, Hold, Limits, Wanted
from backend.messaging.held import Held, Outbound, earlier_held, hold_or_refuse
from backend.messaging.pacing import SendingPace
from backend.messaging.reconciliation import SendRecords
from backend.messaging.twilio_api import TwilioTexts
from backend.people.profiles import ProfileDirectory
from message_rules.sms import split_for_sms

log = get_logger(__name__)

# Twilio's codes for "this person replied STOP to your number at the carrier".
UNSUBSCRIBED_AT_CARRIER = 21610
# Twilio's status words, in the order a message moves through them.
STATUS_RANK = {
    "queued": 0, "accepted": 0, "scheduled": 0, "sending": 1, "sent": 2,
    "delivered": 3, "undelivered": 3, "failed": 3, "read": 4,
}  # fmt: skip


@dataclass(frozen=True)
class OutboundText:
    to: str  # E.164
    body: str
    purpose: MessagePurpose
    media_urls: Sequence[str] = ()
    in_reply_to: int | None = None
    # The same key sent again is the same send: answered from the record, never resent.
    send_key: str | None = None
    follow_up: FollowUp | None = None
    # A marketing text the guards say may not go now is held (the default) or refused
    # with when it may go; `limits`: tighter guards than the business's (a sequence's).
    if_not_now: NotNow = NotNow.HOLD
    limits: Limits | None = None
    # Who asks for it (the audit's actor name), kept with a held text.
    requested_by: str | None = None


@dataclass(frozen=True)
class Sent:
    messages: list[Message]
    repeated: bool  # the send key was used before: this is the earlier send's record


@dataclass
class SmsDoor:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    texts: TwilioTexts
    pace: SendingPace
    guard: ContactGuard
    sender: str
    status_callback_url: str
    # The longest a send can take (the pace's wait and Twilio's timeout): an unconfirmed
    # part younger than this may still be on its way, and is left alone.
    in_flight: timedelta = timedelta(seconds=45)

    @property
    def _records(self) -> SendRecords:
        return SendRecords(self.sessions, self.clock)

    async def send(self, text: OutboundText) -> Sent | Held:
        """Check, record and send; the recorded parts, or the held message when the
        guards hold a marketing text. Raises `SendRefused`."""
        [result] = await self.send_many([text])
        if isinstance(result, SendRefused):
            raise result
        return result

    async def send_many(self, texts: Sequence[OutboundText]) -> list[Sent | Held | SendRefused]:
        """`send` for many texts at once, each answered in its place: they are checked
        and recorded in one transaction, sent side by side (each text's parts in order),
        and Twilio's acceptances are stored in one transaction."""
        results: list[Sent | Held | SendRefused | None] = [None] * len(texts)
        fresh: list[tuple[int, list[Message]]] = []
        repeated: list[tuple[int, list[Message]]] = []
        try:
            async with self.sessions.begin() as session:
                earlier = await self._earlier_sends(session, texts)
                new = [i for i, t in enumerate(texts) if t.send_key not in earlier]
                owners = await self.directory.ids_by_identity(
                    session, IdentityKind.SMS, [texts[i].to for i in new]
                )
                consents = await consent.current_of(session, owners.values())
                allowed: list[tuple[int, OutboundText, uuid.UUID | None]] = []
                for index, text in enumerate(texts):
                    if text.send_key in earlier:
                        found = earlier[text.send_key]
                        if isinstance(found, SendRefused | Held):
                            results[index] = found
                        else:
                            repeated.append((index, found))
                        continue
                    owner = owners.get(text.to)
                    try:
                        if text.purpose is MessagePurpose.COMPLIANCE and not (
                            await self._keyword_reply(session, text)
                        ):
                            # In reply to a text that changed nothing: a conversational
                            # reply, which consent must allow.
                            text = replace(text, purpose=MessagePurpose.CONVERSATIONAL)
                        if text.purpose is MessagePurpose.CONVERSATIONAL and not (
                            await self._answers_a_text(session, text)
                        ):
                            raise SendRefused(
                                Refusal.NOT_A_REPLY,
                                "A conversational text answers a text this number sent: "
                                "name it in in_reply_to. A message Parley starts is "
                                "marketing or transactional.",
                            )
                        if text.purpose is not MessagePurpose.COMPLIANCE:
                            refuse_unless_allowed(
                                owner, consents.get(owner, {}) if owner else {},
                                Channel.SMS, text.purpose, "texts",
                            )  # fmt: skip
                    except SendRefused as refused:
                        results[index] = refused
                        continue
                    allowed.append((index, text, owner))
                holds = await self._guard(session, allowed)
                for (index, text, owner), hold in zip(allowed, holds, strict=True):
                    if hold is not None and owner is not None:
                        results[index] = self._hold(session, text, owner, hold)
                        continue
                    rows = self._parts(text, owner)
                    session.add_all(rows)
                    fresh.append((index, rows))
        except IntegrityError:
            if len(texts) == 1:
                # The same send key, sent twice at the same moment: the first one sends.
                async with self.sessions() as session:
                    taken = (await self._earlier_sends(session, texts)).get(texts[0].send_key or "")
                if taken is None:
                    raise
                if isinstance(taken, SendRefused | Held):
                    return [taken]
                return [await self._settle(taken)]
            # One of these keys is being sent by someone else: each text on its own.
            return [await as_answer(self.send(text)) for text in texts]
        accepted: list[tuple[Message, Accepted]] = []

        async def send_parts(index: int, rows: list[Message]) -> None:
            try:
                for part, row in enumerate(rows):
                    accepted.append((row, await self._deliver_part(row, rows[part + 1 :])))
            except SendRefused as refused:
                results[index] = refused
                return
            results[index] = Sent(rows, repeated=False)
            log.info(
                "sms.sent", to=redact(IdentityKind.SMS, rows[0].to_address),
                purpose=rows[0].purpose, parts=len(rows), batch_id=str(rows[0].batch_id),
            )  # fmt: skip

        async def settle(index: int, rows: list[Message]) -> None:
            results[index] = await as_answer(self._settle(rows))

        failures = [
            outcome
            for outcome in await asyncio.gather(
                *(send_parts(i, rows) for i, rows in fresh),
                *(settle(i, rows) for i, rows in repeated),
                return_exceptions=True,
            )
            if isinstance(outcome, BaseException)
        ]
        # Store what Twilio accepted even if something else went wrong meanwhile.
        await self._confirm(accepted)
        if failures:
            raise failures[0]
        assert all(result is not None for result in results)
        return [result for result in results if result is not None]

    async def _settle(self, earlier: list[Message]) -> Sent:
        """The earlier send of a repeated key. Parts recorded but never confirmed by
        Twilio (the sender crashed, or Twilio could not be reached) are looked up in
        Twilio's record: found, they are adopted; missing, they are sent now. A part
        that may still be on its way is not touched (409, ask again later)."""
        in_doubt = [r for r in earlier if r.provider_sid is None and r.status == "queued"]
        if not in_doubt:
            return Sent(earlier, repeated=True)
        wait = self._records.still_in_flight(in_doubt, self.in_flight)
        if wait is not None:
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS,
                "This send is still in progress; ask again later.",
                earlier,
                retry_after=wait.total_seconds(),
            )
        for index, row in enumerate(in_doubt):
            if await self._found_at_twilio(row):
                continue
            await self._recheck_consent(row, in_doubt[index:])
            await self._send_part(row, in_doubt[index + 1 :])
            log.info("sms.resent_after_doubt", message_id=row.id, batch_id=str(row.batch_id))
        return Sent(earlier, repeated=True)

    async def _found_at_twilio(self, row: Message) -> bool:
        """Adopt Twilio's record of this part if it has one no other message claims."""
        try:
            listed = await self.texts.recent(row.to_address, row.from_address)
        except (TwilioException, OSError, TimeoutError) as error:
            raise SendRefused(
                Refusal.TWILIO_UNAVAILABLE,
                "Twilio could not be reached to check an earlier send; try again later.",
                [row],
            ) from error
        sid = await self._records.adopt(
            row,
            listed,
            lambda item: item.body == row.body,
            lambda stored, status: advance_status(stored, status, None, None, self.clock),
        )
        if sid is None:
            return False
        log.info("sms.found_after_doubt", message_id=row.id, batch_id=str(row.batch_id))
        return True

    async def _recheck_consent(self, row: Message, unsent: Sequence[Message]) -> None:
        """Consent is checked at the moment of sending: again, before a late part goes."""
        if row.purpose == MessagePurpose.COMPLIANCE.value:
            return  # the one answer to a keyword text, already checked to be that
        needed = consent_needed(MessagePurpose(row.purpose or MessagePurpose.TRANSACTIONAL))
        if not await self._records.consent_allows(row.profile_id, Channel.SMS, needed):
            await self._records.failed(unsent, None, "not sent: consent was withdrawn meanwhile")
            raise SendRefused(
                Refusal.CONSENT_REFUSED,
                "This person's SMS consent no longer allows this text.",
                unsent,
            )

    async def _guard(
        self,
        session: AsyncSession,
        allowed: Sequence[tuple[int, OutboundText, uuid.UUID | None]],
    ) -> list[Hold | None]:
        """For each text consent allows, whether the guards hold it (marketing only)."""
        marketing = [
            (index, Wanted(owner, text.limits))
            for index, text, owner in allowed
            if text.purpose is MessagePurpose.MARKETING and owner is not None
        ]
        holds = await self.guard.check(session, [w for _, w in marketing], self.clock.now())
        by_index = {index: hold for (index, _), hold in zip(marketing, holds, strict=True)}
        return [by_index.get(index) for index, _, _ in allowed]

    def _hold(
        self, session: AsyncSession, text: OutboundText, owner: uuid.UUID, hold: Hold
    ) -> Held | SendRefused:
        wanted = Outbound(
            "sms", text.to, text.body, text.purpose.value, text.send_key, text.if_not_now,
            text.requested_by, text.media_urls,
        )  # fmt: skip
        return hold_or_refuse(session, wanted, owner, hold, self.clock.now(), "texts")

    async def deliver_held(self, held: HeldMessage, send_key: str) -> int:
        """Send a held text now, if it may go (held.HeldMessages)."""
        sent = await self.send(
            OutboundText(
                to=held.to_address, body=held.body, purpose=MessagePurpose(held.purpose),
                media_urls=list(held.media.get("urls", [])), send_key=send_key,
                if_not_now=NotNow.REFUSE, requested_by=held.created_by,
            )
        )  # fmt: skip
        if isinstance(sent, Held):
            raise AssertionError("a release is never held again")  # pragma: no cover
        return sent.messages[0].id

    async def _earlier_sends(
        self, session: AsyncSession, texts: Sequence[OutboundText]
    ) -> dict[str, list[Message] | SendRefused | Held]:
        """The earlier sends of these texts' keys, by key: their parts in order, the
        message held under it, or why the key cannot be used for a text."""
        keys = {t.send_key for t in texts if t.send_key is not None}
        if not keys:
            return {}
        firsts = list(await session.scalars(select(Message).where(Message.send_key.in_(keys))))
        found: dict[str, list[Message] | SendRefused | Held] = dict(
            await earlier_held(session, keys - {m.send_key for m in firsts})
        )
        batches = [m.batch_id for m in firsts if m.channel == "sms"]
        parts: dict[uuid.UUID, list[Message]] = {}
        if batches:
            query = select(Message).where(Message.batch_id.in_(batches)).order_by(Message.part)
            for row in await session.scalars(query):
                parts.setdefault(row.batch_id, []).append(row)
        for first in firsts:
            assert first.send_key is not None
            found[first.send_key] = (
                parts[first.batch_id]
                if first.channel == "sms"
                else SendRefused(
                    Refusal.SEND_KEY_REUSED, "This send key was used for a call, not a text.",
                    [first],
                )
            )  # fmt: skip
        return found

    async def _answers_a_text(self, session: AsyncSession, text: OutboundText) -> bool:
        """Whether the text is in reply to a text its recipient sent: only then is it
        conversational (the bot answering), which needs no marketing consent and is not
        held for the night."""
        inbound = await session.get(Message, text.in_reply_to) if text.in_reply_to else None
        return (
            inbound is not None
            and inbound.direction == "inbound"
            and inbound.from_address == text.to
        )

    async def _keyword_reply(self, session: AsyncSession, text: OutboundText) -> bool:
        """Whether a compliance text is the one answer to a text from the same number
        that was a STOP, START or HELP, or that the bot understood as an SMS opt-out (the
        withdrawal names the text as its evidence, `message_id`); False for a reply to
        any other text from that number."""
        inbound = await session.get(Message, text.in_reply_to) if text.in_reply_to else None
        if inbound is None or inbound.direction != "inbound" or inbound.from_address != text.to:
            raise SendRefused(
                Refusal.NOT_A_KEYWORD_REPLY,
                "A compliance text answers a STOP, START or HELP text from the same number "
                "(in_reply_to).",
            )
        if inbound.keyword is None and not await _opted_out_by(session, inbound):
            return False
        answered = await session.scalar(
            select(func.count()).where(
                Message.in_reply_to_id == inbound.id,
                Message.purpose == MessagePurpose.COMPLIANCE.value,
            )
        )
        if answered:
            raise SendRefused(Refusal.ALREADY_ANSWERED, "That text has been answered already.")
        return True

    def _parts(self, text: OutboundText, profile_id: uuid.UUID | None) -> list[Message]:
        now = self.clock.now()
        bodies = split_for_sms(text.body) if text.body.strip() else [""]
        batch = uuid.uuid4()
        return [
            Message(
                profile_id=profile_id,
                direction="outbound",
                channel="sms",
                purpose=text.purpose.value,
                to_address=text.to,
                from_address=self.sender,
                body=body,
                # Images go with the first part, as MMS.
                media={"urls": list(text.media_urls)} if index == 0 and text.media_urls else {},
                status="queued",
                in_reply_to_id=text.in_reply_to,
                batch_id=batch,
                part=index + 1,
                parts=len(bodies),
                send_key=(
                    None
                    if text.send_key is None
                    else text.send_key
                    if index == 0
                    else f"{text.send_key}#{index + 1}"
                ),
                enrolment_id=text.follow_up.enrolment_id if text.follow_up else None,
                sequence_step=text.follow_up.step if text.follow_up else None,
                variant=text.follow_up.variant if text.follow_up else None,
                created_at=now,
                updated_at=now,
            )
            for index, body in enumerate(bodies)
        ]

    async def _send_part(self, row: Message, rest: Sequence[Message]) -> None:
        await self._confirm([(row, await self._deliver_part(row, rest))])

    async def _deliver_part(self, row: Message, rest: Sequence[Message]) -> Accepted:
        """Wait for the number's turn and hand one part to Twilio; Twilio's answer, not
        yet stored. A refusal marks this part and the `rest` of its text and raises."""
        try:
            await self.pace.wait_turn(self.sender)
        except SendRefused as busy:
            await self._records.failed([row, *rest], None, "not sent: the sending number was busy")
            busy.messages = [row, *rest]
            raise
        callback = f"{self.status_callback_url}?message={row.id}"
        try:
            accepted = await self.texts.create(
                row.to_address, row.from_address, row.body, row.media.get("urls", []), callback
            )
        except TwilioRestException as error:
            if error.status and error.status >= 500:
                # Twilio may have taken it before failing: a retry looks it up first.
                await self._records.in_doubt(
                    [row, *rest], f"Twilio answered {error.status}: {error.msg}"
                )
                raise SendRefused(
                    Refusal.TWILIO_UNAVAILABLE,
                    "Twilio failed; the send is checked on retry.",
                    [row, *rest],
                ) from error
            await self._records.failed([row], error.code, error.msg)
            await self._records.failed(rest, None, "not sent: an earlier part failed")
            if error.code == UNSUBSCRIBED_AT_CARRIER:
                await self._withdraw_at_carrier(row)
            kind = _refusal(error)
            raise SendRefused(
                kind, f"Twilio refused the text: {error.msg}", [row, *rest]
            ) from error
        except (TwilioException, OSError, TimeoutError) as error:
            # A timeout can come after Twilio took the text: the outcome is unknown, and
            # a retry with the same send key looks it up before sending.
            await self._records.in_doubt([row, *rest], f"Twilio could not be reached: {error}")
            raise SendRefused(
                Refusal.TWILIO_UNAVAILABLE,
                "Twilio could not be reached; retry with the same send_key to complete it.",
                [row, *rest],
            ) from error
        return accepted

    async def _confirm(self, accepted: Sequence[tuple[Message, Accepted]]) -> None:
        """Store Twilio's sid for the parts it accepted, in one statement (and the status
        it answered, where that is further along than a status callback got first)."""
        if not accepted:
            return
        now = self.clock.now()
        async with self.sessions.begin() as session:
            await session.execute(
                update(Message),
                [{"id": row.id, "provider_sid": a.sid, "updated_at": now} for row, a in accepted],
            )
            for row, answer in accepted:
                row.provider_sid = answer.sid
                rank = STATUS_RANK.get(answer.status, -1)
                if rank <= STATUS_RANK.get(row.status, -1):
                    continue
                behind = [status for status, r in STATUS_RANK.items() if r < rank]
                await session.execute(
                    update(Message)
                    .where(Message.id == row.id, Message.status.in_(behind))
                    .values(status=answer.status)
                )
                row.status = answer.status

    async def _withdraw_at_carrier(self, row: Message) -> None:
        """Twilio says the person texted STOP to this number: the ledger says so too."""
        if row.profile_id is None:
            return
        async with self.sessions.begin() as session:
            for purpose in (Purpose.MARKETING, Purpose.TRANSACTIONAL):
                if (
                    await consent.state(session, row.profile_id, Channel.SMS, purpose)
                    is not consent.State.WITHDRAWN
                ):
                    await consent.record(
                        session, row.profile_id,
                        consent.Entry(
                            Channel.SMS, purpose, Action.WITHDRAW, Source.SMS_KEYWORD,
                            reply="STOP", metadata={"twilio_error": UNSUBSCRIBED_AT_CARRIER},
                        ),
                        self.clock, audit.SystemActor("twilio"),
                    )  # fmt: skip
        log.info("consent.withdrawn_at_carrier", profile_id=str(row.profile_id))


async def _opted_out_by(session: AsyncSession, inbound: Message) -> bool:
    """Whether the bot withdrew SMS consent because of this text ("please stop texting
    me"): its confirmation is then that text's one compliance answer (CTIA)."""
    if inbound.profile_id is None:
        return False
    line = await session.scalar(
        select(ConsentEvent.seq)
        .where(
            ConsentEvent.profile_id == inbound.profile_id,
            ConsentEvent.action == Action.WITHDRAW.value,
            ConsentEvent.channel.in_([Channel.SMS.value, Channel.ALL.value]),
            json_number(ConsentEvent.channel_metadata, "message_id") == inbound.id,
        )
        .limit(1)
    )
    return line is not None


def _refusal(error: TwilioRestException) -> Refusal:
    if error.code == UNSUBSCRIBED_AT_CARRIER:
        return Refusal.RECIPIENT_UNSUBSCRIBED
    if error.code in (21211, 21614, 21612, 21408):
        return Refusal.UNDELIVERABLE_NUMBER
    if error.status and error.status >= 500:
        return Refusal.TWILIO_UNAVAILABLE
    return Refusal.TWILIO_REFUSED


def advance_status(
    message: Message, status: str, code: int | None, reason: str | None, clock: Clock
) -> bool:
    """Move a message to a later status; callbacks can arrive out of order, so an
    earlier status never overwrites a later one. True if it changed."""
    if STATUS_RANK.get(status, -1) <= STATUS_RANK.get(message.status, -1):
        return False
    message.status = status
    if code is not None or reason is not None:
        message.error_code, message.error_message = code, reason
    message.updated_at = clock.now()
    return True
