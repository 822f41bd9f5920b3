"""The one door for outbound calls.

Every call Parley places (a follow-up step sent by voice) leaves through
`CallDoor.call`: it checks the person's voice consent at the moment of calling, records
the call as a message (channel `voice`, the spoken text as its body) before it goes,
places it with Twilio's Calls API through the `twilio` library, and keeps the call's
progress as Twilio reports it to `POST /twilio/call-status?message=<id>`.

What the person hears, as inline TwiML: a one-second pause (people say "hello?" as
they pick up), the text (`<Say>`, made speakable as the voice channel speaks the bot),
then a `<Gather input="speech dtmf">` whose action is the voice channel's gather webhook,
so what the person says or keys goes to the bot in their conversation (their number,
where the scheduler recorded the follow-up). If they say nothing, the `<Redirect>` after
the `<Gather>` takes them to the voice channel's silence handling (the question asked
once more, then a goodbye), as on any call.

A call's status is kept in Message's status words, so that results count calls as they
count texts ("delivered" is "the person picked up"):

| Twilio's call status | Message status | error_message |
|---|---|---|
| queued | queued | |
| initiated | sending | |
| ringing | sent | |
| in-progress, completed | delivered | |
| busy, no-answer | undelivered | `busy: …`, `no-answer: …` |
| failed, canceled | failed | `failed: …`, `canceled: …` |

Statuses only move forward (callbacks can come out of order). A send key makes a call
idempotent: the same key is the same call, answered from the record; a call whose
outcome is unknown (Twilio unreachable, a timeout, a crash) is looked up in Twilio's
list of calls before it is placed again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.twiml.voice_response import Gather, VoiceResponse

from backend.consent.ledger import Channel, Purpose
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import HeldMessage, Message, Profile
from backend.messaging.door import (
    FollowUp,
    MessagePurpose,
    NotNow,
    Refusal,
    SendRefused,
    require_consent,
)
from backend.messaging.guards import ContactGuard, Limits
from backend.messaging.held import Held, Outbound, earlier_held, guard_one
from backend.messaging.reconciliation import SendRecords
from backend.messaging.sms_door import advance_status
from backend.messaging.twilio_api import TwilioCalls
from backend.people.profiles import ProfileDirectory
from message_rules.speech import Prompt, last_question, speakable, with_query

log = get_logger(__name__)

# Twilio's call status, as Message's status word and what the message says about it.
CALL_STATUS: dict[str, tuple[str, str | None]] = {
    "queued": ("queued", None),
    "initiated": ("sending", None),
    "ringing": ("sent", None),
    "in-progress": ("delivered", None),
    "completed": ("delivered", None),
    "busy": ("undelivered", "busy: the line was busy"),
    "no-answer": ("undelivered", "no-answer: nobody picked up"),
    "failed": ("failed", "failed: the call could not be connected"),
    "canceled": ("failed", "canceled: the call was cancelled before it was answered"),
}
# Twilio's longest inline TwiML.
MAX_TWIML = 4000
# How the <Gather> listens, as the voice channel does by default (bot/credentials.yml).
LISTEN_SECONDS = 5
SPEECH_END_SECONDS = "2"
# Twilio's codes for a number that cannot be called (invalid, unreachable, blocked, or
# outside the account's geographic permissions).
UNCALLABLE = frozenset({13223, 13224, 21211, 21214, 21215, 21216, 21217})


@dataclass(frozen=True)
class OutboundCall:
    to: str  # E.164
    say: str  # the message; spoken as the voice channel speaks (markdown and emoji gone)
    purpose: MessagePurpose  # marketing or transactional (conversational as transactional)
    # The same key placed again is the same call: answered from the record, never redialled.
    send_key: str | None = None
    follow_up: FollowUp | None = None
    # As a text's (sms_door.OutboundText): held or refused when the guards say not now.
    if_not_now: NotNow = NotNow.HOLD
    limits: Limits | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class Placed:
    message: Message  # the call's record: status `queued` until Twilio reports progress
    repeated: bool  # the send key was used before: this is the earlier call's record

    @property
    def messages(self) -> list[Message]:
        """As `Sent.messages` of a text: the one record."""
        return [self.message]


def call_twiml(spoken: str, gather_url: str) -> str:
    """What Twilio plays when the person picks up: a pause, the text, then listening,
    with the voice channel's gather webhook as where the answer (or a silence) goes."""
    prompt = Prompt([], last_question([spoken]))
    twiml = VoiceResponse()
    twiml.pause(length=1)
    twiml.say(spoken)
    twiml.append(
        Gather(
            input="speech dtmf",
            action=with_query(gather_url, prompt.query()),
            method="POST",
            timeout=LISTEN_SECONDS,
            speech_timeout=SPEECH_END_SECONDS,
        )
    )
    twiml.redirect(with_query(gather_url, prompt.query(1)), method="POST")
    return str(twiml)


@dataclass
class CallDoor:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    calls: TwilioCalls
    guard: ContactGuard
    caller_id: str  # the number calls come from
    status_callback_url: str  # POST /twilio/call-status on this backend's public URL
    gather_url: str  # the voice channel's gather webhook on Rasa's public URL
    # The longest placing a call can take (Twilio's timeout and some): an unconfirmed
    # call younger than this may still be on its way, and is left alone.
    in_flight: timedelta = timedelta(seconds=30)

    @property
    def _records(self) -> SendRecords:
        return SendRecords(self.sessions, self.clock)

    async def call(self, call: OutboundCall) -> Placed | Held:
        """Check, record and place; the call's record, or the held message when the
        guards hold a marketing call. Raises `SendRefused`."""
        if call.purpose is MessagePurpose.COMPLIANCE:
            raise SendRefused(
                Refusal.NOT_A_CALL_PURPOSE,
                "Compliance messages answer a keyword text; they are never calls.",
            )
        spoken = speakable(call.say)
        if not spoken:
            raise SendRefused(Refusal.NOTHING_TO_SAY, "A call needs something to say.")
        twiml = call_twiml(spoken, self.gather_url)
        if len(twiml) > MAX_TWIML:
            raise SendRefused(
                Refusal.CALL_TOO_LONG,
                f"The call's TwiML is {len(twiml)} characters; Twilio takes {MAX_TWIML}. Say less.",
            )
        row: Message | None = None
        try:
            async with self.sessions.begin() as session:
                earlier = await self._earlier_call(session, call.send_key)
                if earlier is None:
                    profile = await self.directory.find_by_identity(
                        session, IdentityKind.VOICE, call.to
                    )
                    await require_consent(session, profile, Channel.VOICE, call.purpose, "calls")
                    held = await self._guard(session, call, profile)
                    if isinstance(held, SendRefused):
                        raise held
                    if held is not None:
                        return held
                    row = self._record(call, spoken, profile)
                    session.add(row)
        except IntegrityError:
            # The same send key, placed twice at the same moment: the first one calls.
            async with self.sessions() as session:
                earlier = await self._earlier_call(session, call.send_key)
            if earlier is None:
                raise
        if isinstance(earlier, Held):
            return earlier
        if earlier is not None:
            return await self._settle(earlier)
        assert row is not None
        await self._place(row)
        log.info(
            "call.placed", to=redact(IdentityKind.VOICE, call.to), purpose=call.purpose.value,
            message_id=row.id, sid=row.provider_sid,
        )  # fmt: skip
        return Placed(row, repeated=False)

    async def _guard(
        self, session: AsyncSession, call: OutboundCall, profile: Profile | None
    ) -> Held | SendRefused | None:
        """A marketing call the guards say may not go now, held or refused."""
        if call.purpose is not MessagePurpose.MARKETING or profile is None:
            return None
        wanted = Outbound(
            "voice", call.to, call.say, call.purpose.value, call.send_key, call.if_not_now,
            call.requested_by,
        )  # fmt: skip
        return await guard_one(
            session, self.guard, wanted, profile.id, call.limits, self.clock.now(), "calls"
        )

    async def deliver_held(self, held: HeldMessage, send_key: str) -> int:
        """Place a held call now, if it may go (held.HeldMessages)."""
        placed = await self.call(
            OutboundCall(
                to=held.to_address, say=held.body, purpose=MessagePurpose(held.purpose),
                send_key=send_key, if_not_now=NotNow.REFUSE, requested_by=held.created_by,
            )
        )  # fmt: skip
        if isinstance(placed, Held):
            raise AssertionError("a release is never held again")  # pragma: no cover
        return placed.message.id

    async def _earlier_call(self, session: AsyncSession, key: str | None) -> Message | Held | None:
        if key is None:
            return None
        if held := (await earlier_held(session, [key])).get(key):
            return held
        row = await session.scalar(select(Message).where(Message.send_key == key))
        if row is not None and row.channel != "voice":
            raise SendRefused(
                Refusal.SEND_KEY_REUSED, "This send key was used for a text, not a call.", [row]
            )
        return row

    def _record(self, call: OutboundCall, spoken: str, profile: Profile | None) -> Message:
        now = self.clock.now()
        return Message(
            profile_id=profile.id if profile else None,
            direction="outbound",
            channel="voice",
            purpose=call.purpose.value,
            to_address=call.to,
            from_address=self.caller_id,
            body=spoken,
            media={},
            status="queued",
            batch_id=uuid.uuid4(),
            part=1,
            parts=1,
            send_key=call.send_key,
            enrolment_id=call.follow_up.enrolment_id if call.follow_up else None,
            sequence_step=call.follow_up.step if call.follow_up else None,
            variant=call.follow_up.variant if call.follow_up else None,
            created_at=now,
            updated_at=now,
        )

    async def _settle(self, row: Message) -> Placed:
        """The earlier call of a repeated key. One recorded but never confirmed by Twilio
        (the caller crashed, or Twilio could not be reached) is looked up in Twilio's
        list of calls: found, it is adopted; missing, it is placed now. One that may
        still be on its way is not touched (409, ask again later)."""
        if row.provider_sid is not None or row.status != "queued":
            return Placed(row, repeated=True)
        wait = self._records.still_in_flight([row], self.in_flight)
        if wait is not None:
            raise SendRefused(
                Refusal.SEND_IN_PROGRESS,
                "This call is still being placed; ask again later.",
                [row],
                retry_after=wait.total_seconds(),
            )
        if not await self._found_at_twilio(row):
            await self._recheck_consent(row)
            await self._place(row)
            log.info("call.placed_after_doubt", message_id=row.id, sid=row.provider_sid)
        return Placed(row, repeated=True)

    async def _found_at_twilio(self, row: Message) -> bool:
        """Adopt a call Twilio has from this number to this person, made since the record
        (clock skew allowed), that no other message claims. Twilio lists no TwiML, so
        the earliest such call is taken to be this one."""
        try:
            listed = await self.calls.recent(row.to_address, row.from_address)
        except (TwilioException, OSError, TimeoutError) as error:
            raise SendRefused(
                Refusal.TWILIO_UNAVAILABLE,
                "Twilio could not be reached to check an earlier call; try again later.",
                [row],
            ) from error
        sid = await self._records.adopt(
            row,
            listed,
            lambda _: True,
            lambda stored, status: advance_call_status(stored, status, None, self.clock),
        )
        if sid is None:
            return False
        log.info("call.found_after_doubt", message_id=row.id, sid=sid)
        return True

    async def _recheck_consent(self, row: Message) -> None:
        """Consent is checked at the moment of calling: again, before a late call."""
        needed = Purpose.MARKETING if row.purpose == MessagePurpose.MARKETING.value else (
            Purpose.TRANSACTIONAL
        )  # fmt: skip
        if not await self._records.consent_allows(row.profile_id, Channel.VOICE, needed):
            await self._records.failed([row], None, "not placed: consent was withdrawn meanwhile")
            raise SendRefused(
                Refusal.CONSENT_REFUSED,
                "This person's voice consent no longer allows this call.",
                [row],
            )

    async def _place(self, row: Message) -> None:
        callback = f"{self.status_callback_url}?message={row.id}"
        twiml = call_twiml(row.body, self.gather_url)
        try:
            accepted = await self.calls.create(row.to_address, row.from_address, twiml, callback)
        except TwilioRestException as error:
            if error.status and error.status >= 500:
                # Twilio may have taken it before failing: a retry looks it up first.
                await self._records.in_doubt([row], f"Twilio answered {error.status}: {error.msg}")
                raise SendRefused(
                    Refusal.TWILIO_UNAVAILABLE,
                    "Twilio failed; the call is checked on retry.",
                    [row],
                ) from error
            await self._records.failed([row], error.code, error.msg)
            uncallable = error.code in UNCALLABLE
            kind = Refusal.UNDELIVERABLE_NUMBER if uncallable else Refusal.TWILIO_REFUSED
            raise SendRefused(kind, f"Twilio refused the call: {error.msg}", [row]) from error
        except (TwilioException, OSError, TimeoutError) as error:
            # A timeout can come after Twilio took the call: the outcome is unknown, and
            # a retry with the same send key looks it up before calling.
            await self._records.in_doubt([row], f"Twilio could not be reached: {error}")
            raise SendRefused(
                Refusal.TWILIO_UNAVAILABLE,
                "Twilio could not be reached; retry with the same send_key to complete it.",
                [row],
            ) from error
        async with self.sessions.begin() as session:
            stored = await session.get(
                Message, row.id, populate_existing=True, with_for_update=True
            )
            assert stored is not None
            # The first status callback may have named the call already: the same sid.
            stored.provider_sid = stored.provider_sid or accepted.sid
            advance_call_status(stored, accepted.status, None, self.clock)
        row.provider_sid, row.status = stored.provider_sid, stored.status


def advance_call_status(message: Message, call_status: str, code: int | None, clock: Clock) -> bool:
    """Move a call's record forward to the status word for Twilio's `call_status` (see
    the table above); never back. True if it changed; an unknown status changes nothing."""
    known = CALL_STATUS.get(call_status)
    if known is None:
        return False
    status, reason = known
    if code is not None and reason is None:
        reason = f"Twilio error {code}"
    return advance_status(message, status, code, reason, clock)
