"""The hand-off desk: what an agent does with a hand-off, for the API and the console
alike. Claim it (so two people never answer one customer at once), answer the customer,
release it for someone else, hand it back to the bot. Each step is audited under the
agent's name; an admin may take over or release someone else's claim.

Every reply goes through the channel's one door, with its checks and its record: a web
chat reply is pushed into the visitor's conversation (their open page shows it, and its
history after a reload); a text goes through the SMS door as the answer to the
customer's latest text; an e-mail through the e-mail door as the answer to their latest
e-mail ("Re:" its subject, `In-Reply-To` its Message-ID, so it threads in their mail
app). Each is also put in the person's Rasa conversation as words said by the agent
(`metadata.agent`), so the bot knows what was said when it takes over again. Calls and
voice assistants cannot be written to: their hand-offs are call-back tasks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient
from backend.conversations.transcripts import AGENT_KEY
from backend.core import audit
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import Handoff, Message
from backend.handoffs import handoff as handoffs
from backend.handoffs.handoff import HandoffConflict, is_call_back
from backend.messaging.door import MessagePurpose, NotNow
from backend.messaging.email_door import EmailDoor, OutboundEmail
from backend.messaging.held import Held
from backend.messaging.sms_door import OutboundText, SmsDoor
from backend.messaging.web_door import WebDoor, WebPush

log = get_logger(__name__)


class ReplyRefusal(StrEnum):
    """Why a reply was not sent; the problem type the API answers with (409, but 503
    for a door not set up). A closed or claimed hand-off is a `HandoffConflict`."""

    CALL_BACK = "call-back-task"
    NO_PUSH = "channel-cannot-reply"
    NOT_CONFIGURED = "channel-not-configured"  # 503: its door is not set up here


class ReplyRefused(Exception):
    def __init__(self, kind: ReplyRefusal, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _is_admin(agent: audit.Actor) -> bool:
    return agent.role == "admin"


def _target(handoff: Handoff) -> str | None:
    return str(handoff.profile_id) if handoff.profile_id else None


@dataclass
class Desk:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    web: WebDoor | None  # absent without Rasa's token
    sms: SmsDoor | None  # absent without a Twilio auth token
    conversations: RasaClient
    email: EmailDoor | None = None

    async def claim(
        self, handoff_id: uuid.UUID, agent: audit.Actor, take_over: bool = False
    ) -> Handoff | None:
        """Make `agent` the one answering (None: no such hand-off). Raises
        `HandoffConflict`; `take_over` is for admins (`PermissionError` otherwise)."""
        if take_over and not _is_admin(agent):
            raise PermissionError("Only an admin may take a hand-off over.")
        async with self.sessions.begin() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                return None
            before = handoff.claimed_by
            if handoffs.claim(handoff, self.clock, agent, take_over=take_over):
                await audit.record(
                    session, self.clock, agent, "claim_handoff", _target(handoff),
                    handoff_id=str(handoff.id), taken_from=before,
                )  # fmt: skip
            return handoff

    async def release(self, handoff_id: uuid.UUID, agent: audit.Actor) -> Handoff | None:
        """Leave the hand-off for someone else (an admin may release anyone's claim)."""
        async with self.sessions.begin() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None or handoff.claimed_by_id is None:
                return handoff
            handoffs.release(handoff, agent, take_over=_is_admin(agent))
            await audit.record(
                session, self.clock, agent, "release_handoff", _target(handoff),
                handoff_id=str(handoff.id),
            )  # fmt: skip
            return handoff

    async def close(self, handoff_id: uuid.UUID, agent: audit.Actor) -> Handoff | None:
        """Hand the conversation back to the bot. Rasa is resumed first: if it cannot be
        reached (`RasaUnavailable`), the hand-off stays open. A call-back task is resumed
        too, so the customer's next call meets the bot again."""
        async with self.sessions.begin() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None or handoff.status != "open":
                return handoff
            if handoffs.held_by_other(handoff, agent) and not _is_admin(agent):
                raise HandoffConflict(
                    handoffs.CLAIMED, f"{handoff.claimed_by} is answering this conversation."
                )
            await self.conversations.resume(handoff.conversation_id)
            handoffs.close(handoff, self.clock, agent.name)
            await audit.record(
                session, self.clock, agent, "close_handoff", _target(handoff),
                handoff_id=str(handoff.id),
            )  # fmt: skip
        log.info("handoff.closed", handoff_id=str(handoff_id))
        return handoff

    async def reply(
        self, handoff_id: uuid.UUID, agent: audit.Actor, body: str, send_key: str | None = None
    ) -> Message | None:
        """Send `body` to the customer of an open hand-off, claiming it for `agent` if no
        one has; the message's record (None if there is no such hand-off). Raises
        `HandoffConflict`, `ReplyRefused`, the doors' `SendRefused`, or `RasaUnavailable`."""
        async with self.sessions.begin() as session:
            handoff = await session.get(Handoff, handoff_id)
            if handoff is None:
                return None
            self._may_reply(handoff)
            handoffs.claim(handoff, self.clock, agent)
            conversation, channel, profile = (
                handoff.conversation_id, handoff.channel, handoff.profile_id
            )  # fmt: skip
            answering = await self._latest_from(session, conversation, channel)
        metadata = {AGENT_KEY: agent.name}
        door = {"webchat": self.web, "sms": self.sms, "email": self.email}[channel]
        if door is None:
            raise ReplyRefused(
                ReplyRefusal.NOT_CONFIGURED, f"Parley is not set up to send {channel} messages."
            )
        purpose = MessagePurpose.CONVERSATIONAL if answering else MessagePurpose.TRANSACTIONAL
        if isinstance(door, WebDoor):
            pushed = await door.push(
                WebPush(
                    to=conversation, body=body, purpose=MessagePurpose.CONVERSATIONAL,
                    send_key=send_key, metadata=metadata, if_not_now=NotNow.REFUSE,
                    requested_by=agent.name,
                )
            )  # fmt: skip
            assert not isinstance(pushed, Held)  # only marketing is ever held
            message = pushed.message
        elif isinstance(door, EmailDoor):
            await self.conversations.record_follow_up(conversation, body, None, metadata)
            mailed = await door.send(
                OutboundEmail(
                    to=conversation, subject=_re(answering.subject if answering else None),
                    text=body, purpose=purpose, send_key=send_key, if_not_now=NotNow.REFUSE,
                    requested_by=agent.name,
                    in_reply_to=answering.media.get("message_id") if answering else None,
                )
            )  # fmt: skip
            assert not isinstance(mailed, Held)
            message = mailed.message
        else:
            # The words go into the conversation first, as the scheduler's follow-ups do:
            # if Rasa cannot take them, nothing has been sent.
            await self.conversations.record_follow_up(conversation, body, None, metadata)
            sent = await door.send(
                OutboundText(
                    to=conversation, body=body, purpose=purpose,
                    in_reply_to=answering.id if answering else None, send_key=send_key,
                    if_not_now=NotNow.REFUSE, requested_by=agent.name,
                )
            )  # fmt: skip
            assert not isinstance(sent, Held)
            message = sent.messages[0]
        async with self.sessions.begin() as session:
            await audit.record(
                session, self.clock, agent, "reply_handoff", str(profile) if profile else None,
                handoff_id=str(handoff_id), channel=channel, message_id=message.id,
            )  # fmt: skip
        log.info("handoff.replied", handoff_id=str(handoff_id), channel=channel)
        return message

    def _may_reply(self, handoff: Handoff) -> None:
        if is_call_back(handoff):
            raise ReplyRefused(
                ReplyRefusal.CALL_BACK,
                f"A {handoff.channel} conversation cannot be written to: call the customer "
                "back, then close the hand-off.",
            )
        if handoff.channel not in ("webchat", "sms", "email"):
            raise ReplyRefused(
                ReplyRefusal.NO_PUSH,
                f"The {handoff.channel} channel only answers the customer's own requests.",
            )

    async def _latest_from(
        self, session: AsyncSession, address: str, channel: str
    ) -> Message | None:
        """The customer's latest text or e-mail, which an agent's reply answers (the
        doors' conversational purpose); None on the web."""
        if channel not in ("sms", "email"):
            return None
        found: Message | None = await session.scalar(
            select(Message)
            .where(Message.direction == "inbound", Message.channel == channel,
                   Message.from_address == address)
            .order_by(Message.id.desc())
            .limit(1)
        )  # fmt: skip
        return found


def _re(subject: str | None) -> str:
    """The subject of an answer: "Re:" the customer's, once."""
    if not subject:
        return "Your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
