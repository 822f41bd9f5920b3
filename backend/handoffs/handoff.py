"""Hand-offs: a conversation marked for a person. While one is open the bot is paused
in that conversation (Rasa's ConversationPaused); closing it resumes the bot.

An agent claims a hand-off before answering, so two people never answer one customer at
once; a claim is the agent's until they release it or close the hand-off (an admin may
take it over). On a phone call or a voice assistant the customer cannot be written to
later: those hand-offs are call-back tasks, closed when the agent has called back.
"""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit
from backend.core.clock import Clock
from backend.core.models import Handoff

# Channels whose conversations end with the call: a person calls the customer back.
CALL_BACK_CHANNELS = frozenset({"voice", "alexa"})


class HandoffConflict(Exception):
    """The hand-off is closed, or claimed by someone else: `kind` says which
    (`handoff-closed`, `handoff-claimed`, the API's problem types)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


CLOSED, CLAIMED = "handoff-closed", "handoff-claimed"


def is_call_back(handoff: Handoff) -> bool:
    return handoff.channel in CALL_BACK_CHANNELS


async def open_for(session: AsyncSession, conversation_id: str) -> Handoff | None:
    return await session.scalar(
        select(Handoff).where(Handoff.conversation_id == conversation_id, Handoff.status == "open")
    )


async def open_handoff(
    session: AsyncSession,
    clock: Clock,
    actor: audit.Actor,
    conversation_id: str,
    channel: str,
    reason: str,
    profile_id: uuid.UUID | None,
) -> tuple[Handoff, bool]:
    """The open hand-off for this conversation, opened now (and audited) if there was
    none, whoever opens it: the bot through the API, or a sequence's hand-off step."""
    existing = await open_for(session, conversation_id)
    if existing is not None:
        return existing, False
    handoff = Handoff(
        profile_id=profile_id, conversation_id=conversation_id, channel=channel,
        reason=reason, status="open", opened_at=clock.now(),
    )  # fmt: skip
    session.add(handoff)
    await session.flush()
    await audit.record(
        session, clock, actor, "open_handoff", str(profile_id) if profile_id else None,
        reason=reason,
    )  # fmt: skip
    return handoff, True


async def listed(session: AsyncSession, status: str | None) -> list[Handoff]:
    query = select(Handoff).order_by(Handoff.opened_at)
    if status:
        query = query.where(Handoff.status == status)
    return list(await session.scalars(query))


def close(handoff: Handoff, clock: Clock, by: str) -> None:
    handoff.status = "closed"
    handoff.closed_at = clock.now()
    handoff.closed_by = by


def held_by_other(handoff: Handoff, agent: audit.Actor) -> bool:
    return handoff.claimed_by_id is not None and handoff.claimed_by_id != agent.id


def claim(handoff: Handoff, clock: Clock, agent: audit.Actor, *, take_over: bool = False) -> bool:
    """Make `agent` the one answering; whether the claim is new. Raises `HandoffConflict`
    if it is closed or someone else holds it (unless `take_over`)."""
    if handoff.status != "open":
        raise HandoffConflict(CLOSED, "The hand-off is closed: the bot answers this conversation.")
    if handoff.claimed_by_id is not None and handoff.claimed_by_id == agent.id:
        return False
    if held_by_other(handoff, agent) and not take_over:
        raise HandoffConflict(CLAIMED, f"{handoff.claimed_by} is answering this conversation.")
    handoff.claimed_by, handoff.claimed_by_id = agent.name, agent.id
    handoff.claimed_at = clock.now()
    return True


def release(handoff: Handoff, agent: audit.Actor, *, take_over: bool = False) -> None:
    """Leave the hand-off for someone else. Raises `HandoffConflict` if another agent
    holds it (unless `take_over`)."""
    if held_by_other(handoff, agent) and not take_over:
        raise HandoffConflict(CLAIMED, f"{handoff.claimed_by} is answering this conversation.")
    handoff.claimed_by, handoff.claimed_by_id, handoff.claimed_at = None, None, None
