"""The one door for messages pushed into a web chat conversation.

A follow-up (or any message Parley starts) for a person on the web goes into their
latest web chat conversation through `WebDoor.push`: it checks their web consent and,
for marketing, the guards at the moment of pushing; records the message (channel
`web`) before it goes; then appends it to the conversation through Rasa's HTTP API,
which sends it to every open page of that visitor, or leaves it in the history shown
at their next visit. The push carries the door's signature (message_rules.
door_signature): the web chat channel drops a push without it, so nothing else, not
even a caller holding Rasa's token, can push a message into a web chat.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent.ledger import Channel
from backend.conversations.rasa_client import RasaClient, RasaUnavailable
from backend.core.clock import Clock
from backend.core.identities import IdentityKind
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
from backend.messaging.held import Held, Outbound, earlier_send, guard_one
from backend.people.profiles import ProfileDirectory
from message_rules import door_signature

log = get_logger(__name__)


@dataclass(frozen=True)
class WebPush:
    to: str  # the web chat session (the conversation id)
    body: str
    purpose: MessagePurpose
    send_key: str | None = None
    follow_up: FollowUp | None = None
    asks: str | None = None  # the question it asks (the conversation's follow_up slot)
    metadata: dict[str, Any] | None = None
    if_not_now: NotNow = NotNow.HOLD
    limits: Limits | None = None
    requested_by: str | None = None


@dataclass(frozen=True)
class Pushed:
    message: Message
    repeated: bool  # the send key was used before: this is the earlier push's record

    @property
    def messages(self) -> list[Message]:
        return [self.message]


@dataclass
class WebDoor:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    guard: ContactGuard
    conversations: RasaClient
    secret: str  # the web chat secret the channel checks the door's signature with

    async def push(self, push: WebPush) -> Pushed | Held:
        """Check, record and push; the message's record, or the held message when the
        guards hold a marketing push. Raises `SendRefused`."""
        if push.purpose is MessagePurpose.COMPLIANCE:
            raise SendRefused(
                Refusal.NOT_A_WEB_PURPOSE,
                "Compliance messages answer a keyword text; they are never web pushes.",
            )
        now = self.clock.now()
        async with self.sessions.begin() as session:
            earlier = await self._earlier(session, push.send_key)
            if earlier is not None:
                return earlier
            profile = await self.directory.find_by_identity(session, IdentityKind.WEB, push.to)
            await require_consent(session, profile, Channel.WEB, push.purpose, "web messages")
            held = await self._guard(session, push, profile)
            if isinstance(held, SendRefused):
                raise held
            if held is not None:
                return held
            row = Message(
                profile_id=profile.id if profile else None,
                direction="outbound", channel="web", purpose=push.purpose.value,
                to_address=push.to, from_address="webchat", body=push.body, media={},
                status="queued", batch_id=uuid.uuid4(), part=1, parts=1,
                send_key=push.send_key, created_at=now, updated_at=now,
                enrolment_id=push.follow_up.enrolment_id if push.follow_up else None,
                sequence_step=push.follow_up.step if push.follow_up else None,
                variant=push.follow_up.variant if push.follow_up else None,
            )  # fmt: skip
            session.add(row)
        metadata = {
            **(push.metadata or {}),
            door_signature.METADATA_KEY: door_signature.sign(self.secret, push.to, push.body),
        }
        try:
            await self.conversations.record_follow_up(
                push.to, push.body, push.asks, metadata, output_channel="webchat"
            )
            status, detail = "sent", None
        except RasaUnavailable as error:
            status, detail = "failed", f"Rasa could not take it: {error}"
        async with self.sessions.begin() as session:
            stored = await session.get(Message, row.id)
            assert stored is not None
            stored.status, stored.error_message, stored.updated_at = status, detail, now
        if status == "failed":
            raise SendRefused(Refusal.CHANNEL_UNAVAILABLE, detail or "", [stored])
        log.info("web.pushed", message_id=row.id, purpose=push.purpose.value)
        return Pushed(stored, repeated=False)

    async def deliver_held(self, held: HeldMessage, send_key: str) -> int:
        """Push a held message now, if it may go (held.HeldMessages)."""
        pushed = await self.push(
            WebPush(
                to=held.to_address, body=held.body, purpose=MessagePurpose(held.purpose),
                send_key=send_key, if_not_now=NotNow.REFUSE, requested_by=held.created_by,
            )
        )  # fmt: skip
        if isinstance(pushed, Held):
            raise AssertionError("a release is never held again")  # pragma: no cover
        return pushed.message.id

    async def _earlier(self, session: AsyncSession, key: str | None) -> Pushed | Held | None:
        found = await earlier_send(session, key, "web")
        return Pushed(found, repeated=True) if isinstance(found, Message) else found

    async def _guard(
        self, session: AsyncSession, push: WebPush, profile: Profile | None
    ) -> Held | SendRefused | None:
        if push.purpose is not MessagePurpose.MARKETING or profile is None:
            return None
        wanted = Outbound(
            "web", push.to, push.body, push.purpose.value, push.send_key, push.if_not_now,
            push.requested_by,
        )  # fmt: skip
        return await guard_one(
            session, self.guard, wanted, profile.id, push.limits, self.clock.now(), "web messages"
        )
