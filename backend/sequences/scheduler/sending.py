"""Sending what the deciding half planned, outside any transaction: each follow-up is
recorded in the person's Rasa conversation first (so a reply is read in context), then
texts go together through the SMS door, calls through the call door, web follow-ups
through the web door and e-mails through the e-mail door (an e-mail is recorded in the
conversation named by the address, where its reply lands); a hand-off pauses the bot in
the conversation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent.ledger import Channel
from backend.conversations.rasa_client import FollowUpRecord, RasaClient, RasaUnavailable
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.messaging.call_door import CallDoor, OutboundCall
from backend.messaging.door import SendRefused
from backend.messaging.email_door import EmailDoor, OutboundEmail
from backend.messaging.sms_door import SmsDoor
from backend.messaging.web_door import WebDoor, WebPush
from backend.sequences.scheduler.plans import (
    DoorAnswer,
    Outcome,
    SendPlan,
    not_recorded,
    outcome_of,
)

log = get_logger(__name__)


@dataclass(frozen=True)
class Sender:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    door: SmsDoor | None
    calls: CallDoor | None
    # None when Rasa's token is not set: texts and calls go unrecorded, and web
    # follow-ups cannot go at all.
    conversations: RasaClient | None
    web: WebDoor | None
    emails: EmailDoor | None = None

    async def send_all(self, plans: list[SendPlan]) -> list[Outcome]:
        """Send a batch's follow-ups: texts together through the door, web and voice
        follow-ups each on their own."""
        texts = [p for p in plans if p.channel is Channel.SMS]
        emails = [p for p in plans if p.channel is Channel.EMAIL]
        others = [p for p in plans if p.channel not in (Channel.SMS, Channel.EMAIL)]
        outcomes = list(await asyncio.gather(*(self._send_one(p) for p in others)))
        if texts:
            outcomes += await self._text_all(texts)
        if emails:
            outcomes += await self._email_all(emails)
        return outcomes

    async def _text_all(self, plans: list[SendPlan]) -> list[Outcome]:
        """Texts: each recorded in its conversation, then the recorded ones through the
        SMS door at once."""
        door = self.door
        if door is None:
            return _not_configured(plans, "sms")
        return await self._recorded_then(
            plans, lambda ready: door.send_many([p.text for p in ready])
        )

    async def _email_all(self, plans: list[SendPlan]) -> list[Outcome]:
        """E-mails: each recorded in the address's conversation, then the recorded ones
        through the e-mail door at once (consent, suppression, the guards and each
        domain's pace again)."""
        door = self.emails
        if door is None:
            return _not_configured(plans, "e-mail")
        return await self._recorded_then(
            plans, lambda ready: door.send_many([_email_of(p) for p in ready])
        )

    async def _recorded_then(
        self,
        plans: list[SendPlan],
        send_many: Callable[[list[SendPlan]], Awaitable[Sequence[DoorAnswer]]],
    ) -> list[Outcome]:
        """Record each follow-up in its conversation, then send the recorded ones
        together; the others wait for Rasa."""
        recorded = await self._record(plans)
        ready = [p for p, ok in zip(plans, recorded, strict=True) if ok]
        outcomes = [not_recorded(p) for p, ok in zip(plans, recorded, strict=True) if not ok]
        results = await send_many(ready) if ready else []
        return outcomes + [outcome_of(p, r) for p, r in zip(ready, results, strict=True)]

    async def _send_one(self, plan: SendPlan) -> Outcome:
        """A web follow-up, or a call (which speaks the text and lets the person answer,
        in the same conversation)."""
        if plan.channel is Channel.WEB:
            return await self._push_to_web(plan)
        if self.calls is None:
            return Outcome(plan, "retry", f"{plan.channel.value} is not configured", retry=True)
        if not (await self._record([plan]))[0]:
            return not_recorded(plan)
        text = plan.text
        try:
            placed = await self.calls.call(
                OutboundCall(
                    to=text.to, say=text.body, purpose=text.purpose, send_key=text.send_key,
                    follow_up=text.follow_up,
                )
            )  # fmt: skip
        except SendRefused as refused:
            return outcome_of(plan, refused)
        return outcome_of(plan, placed)

    async def _push_to_web(self, plan: SendPlan) -> Outcome:
        """A web follow-up, through the web door: into the person's web chat
        conversation, pushed to an open page or read at the next visit."""
        if self.web is None:
            return Outcome(
                plan, "retry", "Rasa's token is not set, so web follow-ups cannot be sent",
                retry=True,
            )  # fmt: skip
        text = plan.text
        try:
            pushed = await self.web.push(
                WebPush(
                    to=text.to, body=text.body, purpose=text.purpose, send_key=text.send_key,
                    follow_up=text.follow_up, asks=plan.asks,
                    metadata={"sequence_step": plan.step, "enrolment_id": str(plan.enrolment_id)},
                    if_not_now=text.if_not_now, limits=text.limits,
                )
            )  # fmt: skip
        except SendRefused as refused:
            return outcome_of(plan, refused)
        return outcome_of(plan, pushed)

    async def pause(self, conversation: str) -> None:
        """Pause the bot where a person takes over; the open hand-off is what counts."""
        if self.conversations is None:
            return
        try:
            await self.conversations.append_events(conversation, [{"event": "pause"}])
        except RasaUnavailable as error:
            log.warning("sequence.handoff_not_paused", error=str(error))

    async def _record(self, plans: list[SendPlan]) -> list[bool]:
        """Put each text in the person's conversation (an SMS or voice conversation is
        named by the phone number), the whole batch in one request; for each, whether
        it is there (a retry after an unknown outcome is there already)."""
        wanted = [p for p in plans if p.record]
        if self.conversations is None or not wanted:
            return [True] * len(plans)
        try:
            failed = await self.conversations.record_follow_ups(
                [
                    FollowUpRecord(
                        p.text.to, p.text.body, p.asks,
                        {"sequence_step": p.step, "enrolment_id": str(p.enrolment_id)},
                    )
                    for p in wanted
                ]
            )  # fmt: skip
        except RasaUnavailable as error:
            failed = {p.text.to: str(error) for p in wanted}
        for conversation, why in failed.items():
            log.warning(
                "sequence.not_recorded", to=redact(IdentityKind.SMS, conversation), error=why
            )
        return [not p.record or p.text.to not in failed for p in plans]


def _email_of(plan: SendPlan) -> OutboundEmail:
    text, email = plan.text, plan.email
    assert email is not None  # deciding renders every e-mail's subject and HTML
    return OutboundEmail(
        to=text.to, subject=email.subject, text=text.body, html=email.html,
        purpose=text.purpose, send_key=text.send_key, follow_up=text.follow_up,
        if_not_now=text.if_not_now, limits=text.limits,
    )  # fmt: skip


def _not_configured(plans: list[SendPlan], channel: str) -> list[Outcome]:
    return [Outcome(p, "retry", f"{channel} is not configured", retry=True) for p in plans]
