"""What deciding a step hands to the sending half of the scheduler, and what comes back:
a follow-up to send (`SendPlan`), a conversation to pause after a hand-off
(`PausePlan`), and how a send went (`Outcome`), read from a door's answer."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from backend.consent.ledger import Channel
from backend.messaging.call_door import Placed
from backend.messaging.door import Refusal, SendRefused
from backend.messaging.email_door import Mailed
from backend.messaging.held import Held
from backend.messaging.sms_door import OutboundText, Sent
from backend.messaging.web_door import Pushed
from backend.sequences.templates import RenderedEmail

# Consent refusals: the person does not want this text; never retried.
CONSENT_KINDS = frozenset({Refusal.CONSENT_REFUSED, Refusal.RECIPIENT_UNSUBSCRIBED})
# The text may or may not have reached Twilio: try again later with the same send key,
# so the door looks it up before sending.
IN_DOUBT_KINDS = frozenset({Refusal.TWILIO_UNAVAILABLE, Refusal.SEND_IN_PROGRESS})
# Not sent (the number's or the domain's pace was full, the mail server unreachable or
# asking to try later, a channel not set up): try again later, as a new send.
NOT_SENT_KINDS = frozenset(
    {
        Refusal.SENDER_BUSY, Refusal.CHANNEL_UNAVAILABLE, Refusal.MAIL_UNAVAILABLE,
        Refusal.EMAIL_NOT_CONFIGURED,
    }
)  # fmt: skip
# The guards say not yet (quiet hours, the frequency cap): try again when they allow.
NOT_YET_KINDS = frozenset({Refusal.QUIET_HOURS, Refusal.FREQUENCY_CAP})


@dataclass(frozen=True)
class SendPlan:
    work_id: int
    enrolment_id: uuid.UUID
    sequence: str
    profile_id: uuid.UUID
    step: str
    attempt: int
    text: OutboundText
    asks: str | None
    channel: Channel = Channel.SMS
    # False for a retry after an unknown outcome (a new row with the earlier row's key)
    # or after the sending number was busy (`SequenceWork.recorded`): it was recorded
    # before that try. A row run again after its worker died may or may not have been
    # recorded, so it is recorded again: a text read out of context is worse than a
    # conversation that shows it twice.
    record: bool = True
    # The variant was rolled for this send: keep it on the enrolment with the outcome.
    new_variant: bool = False
    # An e-mail's subject and HTML (`text.body` is its text part).
    email: RenderedEmail | None = None


@dataclass(frozen=True)
class PausePlan:
    """After a hand-off step: pause the bot in this conversation."""

    conversation: str


@dataclass(frozen=True)
class Outcome:
    """How a send went, to be recorded on its step."""

    plan: SendPlan
    outcome: str
    detail: str | None = None
    # Try again later; with `same_key`, as the same send (its outcome is unknown).
    retry: bool = False
    same_key: bool = False
    # The text is in the person's conversation (the door or the calls were asked only
    # once it was), so a retry does not record it again.
    in_conversation: bool = False
    # Try again at this time, without counting an attempt (the guards said not yet).
    retry_at: datetime | None = None


def not_recorded(plan: SendPlan) -> Outcome:
    return Outcome(plan, "retry", "Rasa could not record it in the conversation", retry=True)


# What a door answers a send.
DoorAnswer = Sent | Placed | Pushed | Mailed | Held | SendRefused


def outcome_of(plan: SendPlan, result: DoorAnswer) -> Outcome:
    """A door's answer as a step outcome (the door is asked once the text is in the
    person's conversation)."""
    if isinstance(result, Held):  # the scheduler asks to be refused, never held
        return Outcome(plan, "failed", f"held as message {result.message.id}")
    if isinstance(result, SendRefused):
        if result.kind in CONSENT_KINDS:
            return Outcome(plan, "skipped_consent", str(result))
        if result.kind in NOT_YET_KINDS and result.not_before is not None:
            return Outcome(
                plan, "rescheduled", str(result), retry=True, in_conversation=True,
                retry_at=result.not_before,
            )  # fmt: skip
        if result.kind in IN_DOUBT_KINDS | NOT_SENT_KINDS:
            detail = f"{result.kind}: {result}"
            return Outcome(
                plan, "retry", detail, retry=True, same_key=result.kind in IN_DOUBT_KINDS,
                in_conversation=True,
            )  # fmt: skip
        return Outcome(plan, "failed", f"{result.kind}: {result}")
    first = result.messages[0]
    if first.status == "failed":
        return Outcome(plan, "failed", f"message {first.id}: {first.error_message}")
    return Outcome(plan, "sent", f"message {first.id}" + (" (repeated)" if result.repeated else ""))
