"""A person's e-mail to the business becomes a hand-off: it is recorded once
(backend.messaging.email_inbound: which also ends their sequences at the next step, and
takes an "unsubscribe" e-mail as one), put in the conversation named by their address
as their words (the bot paused there), and waits in the agents' inbox for a person to
answer it by e-mail (`Desk.reply`).

Choice: the bot does not answer e-mail. A reply to a follow-up e-mail is a person
writing at length, at their own pace, often about something the e-mail did not ask;
it deserves a person, as the trial nurture's replies do. An e-mail while a hand-off is
open for the address lands in that hand-off."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient, RasaUnavailable
from backend.core import audit
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import Handoff
from backend.handoffs import handoff as handoffs
from backend.messaging.email_inbound import EmailInbox, InboundEmail, ReceivedEmail

log = get_logger(__name__)

EMAIL = audit.SystemActor("email")
CHANNEL = "email"
REASON = "email_reply"


@dataclass(frozen=True)
class EmailReceived:
    received: ReceivedEmail
    handoff: Handoff | None  # the hand-off the e-mail waits in (None: no reply)


@dataclass
class EmailReplies:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    inbox: EmailInbox
    conversations: RasaClient

    async def receive(self, mail: InboundEmail) -> EmailReceived:
        received = await self.inbox.receive(mail)
        if not received.is_reply:
            return EmailReceived(received, None)
        async with self.sessions.begin() as session:
            handoff, opened = await handoffs.open_handoff(
                session, self.clock, EMAIL, mail.sender, CHANNEL, REASON, received.profile_id
            )
            if opened:
                handoff.note = f"Wrote by e-mail: {mail.subject or '(no subject)'}"
        if not received.repeated:
            await self._into_conversation(mail)
        return EmailReceived(received, handoff)

    async def _into_conversation(self, mail: InboundEmail) -> None:
        """The person's words in the conversation named by their address, the bot
        paused there; without Rasa the e-mail is still recorded and handed off."""
        if not self.conversations.configured:
            return
        said = {
            "event": "user", "text": mail.text, "input_channel": CHANNEL,
            "metadata": {"subject": mail.subject}, "parse_data": {"text": mail.text},
        }  # fmt: skip
        try:
            await self.conversations.append_events(mail.sender, [said, {"event": "pause"}])
        except RasaUnavailable as error:
            log.warning("email.not_in_conversation", error=str(error))
