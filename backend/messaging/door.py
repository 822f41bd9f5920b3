"""The one door's rules, which the SMS, call and web doors all apply: the purposes a
message can have, what consent each needs at the moment of sending, what to do when
the guards (backend.messaging.guards) say not now, and why a door refuses (`Refusal`;
the HTTP layer maps each kind to a status)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger as consent
from backend.consent.ledger import Channel, Purpose
from backend.core.models import Message, Profile
from backend.messaging.guards import Hold, HoldReason


class MessagePurpose(StrEnum):
    MARKETING = "marketing"  # needs marketing consent granted on the channel
    TRANSACTIONAL = "transactional"  # anything but a withdrawn consent on the channel
    CONVERSATIONAL = "conversational"  # the bot answering a person who wrote to it
    COMPLIANCE = "compliance"  # the one answer to a STOP, START or HELP text


@dataclass(frozen=True)
class FollowUp:
    """The sequence step a text is sent for, kept with the message for results."""

    enrolment_id: uuid.UUID
    step: str
    variant: str


class NotNow(StrEnum):
    """What a door does with a marketing message the guards say may not go now
    (backend.messaging.guards): hold it and deliver it when it may, or refuse it with
    the time it may go."""

    HOLD = "hold"
    REFUSE = "refuse"


class Refusal(StrEnum):
    """Why a door did not send: the HTTP layer answers each with its problem type (the
    same words) and status (messaging.routes.REFUSAL_STATUS)."""

    CONSENT_REFUSED = "consent-refused"  # the person's consent does not allow it
    QUIET_HOURS = "quiet-hours"  # the person's night: not before `not_before`
    FREQUENCY_CAP = "frequency-cap"  # enough marketing for now: not before `not_before`
    RECIPIENT_UNSUBSCRIBED = "recipient-unsubscribed"  # at the carrier
    UNDELIVERABLE_NUMBER = "undeliverable-number"
    SENDER_BUSY = "sender-busy"  # the sending number's pace is full now
    SEND_IN_PROGRESS = "send-in-progress"  # the same send key, still on its way
    SEND_KEY_REUSED = "send-key-reused"  # the same send key, for a text vs a call
    NOT_A_KEYWORD_REPLY = "not-a-keyword-reply"
    NOT_A_REPLY = "not-a-reply"  # conversational, but in reply to nothing the person sent
    ALREADY_ANSWERED = "already-answered"
    NOT_A_CALL_PURPOSE = "not-a-call-purpose"
    NOT_A_WEB_PURPOSE = "not-a-web-purpose"
    NOTHING_TO_SAY = "nothing-to-say"
    CALL_TOO_LONG = "call-too-long"
    TWILIO_UNAVAILABLE = "twilio-unavailable"  # the outcome is unknown: retry, same key
    TWILIO_REFUSED = "twilio-refused"
    CHANNEL_UNAVAILABLE = "channel-unavailable"  # Rasa did not take a web push
    NOT_AN_EMAIL_PURPOSE = "not-an-email-purpose"
    UNDELIVERABLE_ADDRESS = "undeliverable-address"  # the mail server refused it for good
    MAIL_UNAVAILABLE = "mail-unavailable"  # the mail server not reached: retry, same key
    EMAIL_NOT_CONFIGURED = "email-not-configured"  # no From address or postal address


class SendRefused(Exception):
    """The text or call was not sent (or not all of it); `kind` says why."""

    def __init__(
        self,
        kind: Refusal,
        message: str,
        messages: Sequence[Message] = (),
        retry_after: float | None = None,
        not_before: datetime | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.messages = list(messages)
        self.retry_after = retry_after
        self.not_before = not_before


def not_now(hold: Hold, now: datetime, noun: str) -> SendRefused:
    """The refusal of a marketing message the guards hold, with when it may go."""
    why = (
        "it is night for this person"
        if hold.reason is HoldReason.QUIET_HOURS
        else ("this person has had as many marketing messages as the frequency cap allows")
    )
    return SendRefused(
        Refusal(hold.reason.value),
        f"Not now: {why}. Marketing {noun} may go from {hold.until.isoformat()}.",
        retry_after=max(1.0, (hold.until - now).total_seconds()),
        not_before=hold.until,
    )


@dataclass(frozen=True)
class Accepted:
    sid: str
    status: str


def consent_needed(purpose: MessagePurpose) -> Purpose:
    """Marketing needs the grant; anything else only needs no withdrawal."""
    return Purpose.MARKETING if purpose is MessagePurpose.MARKETING else Purpose.TRANSACTIONAL


async def require_consent(
    session: AsyncSession,
    profile: Profile | None,
    channel: Channel,
    purpose: MessagePurpose,
    noun: str,
) -> None:
    """Refuse (409 consent-refused) unless the person's consent on `channel` allows a
    message of this purpose now; someone unknown may get anything but marketing."""
    known = (await consent.current_of(session, [profile.id]))[profile.id] if profile else {}
    refuse_unless_allowed(profile.id if profile else None, known, channel, purpose, noun)


def refuse_unless_allowed(
    profile_id: uuid.UUID | None,
    known: consent.Current,
    channel: Channel,
    purpose: MessagePurpose,
    noun: str,
) -> None:
    """`require_consent` with the person's consent already read."""
    needed = consent_needed(purpose)
    if profile_id is None:
        if needed is Purpose.MARKETING:
            raise SendRefused(
                Refusal.CONSENT_REFUSED, f"Nobody with this number has agreed to marketing {noun}."
            )
        return
    found = known.get((channel, needed))
    if not consent.allows(found[0] if found else consent.State.NONE, needed):
        raise SendRefused(
            Refusal.CONSENT_REFUSED,
            f"This person's {channel.value} consent does not allow {purpose.value} {noun} now.",
        )


Answer = TypeVar("Answer")


async def as_answer(work: Awaitable[Answer]) -> Answer | SendRefused:
    """A send's result, or its refusal, as a value (a batch answers each in its place)."""
    try:
        return await work
    except SendRefused as refused:
        return refused
