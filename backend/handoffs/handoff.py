"""Hand-offs: a conversation marked for a person. While one is open the bot is paused
in that conversation (Rasa's ConversationPaused); closing it resumes the bot."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit
from backend.core.clock import Clock
from backend.core.models import Handoff


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
