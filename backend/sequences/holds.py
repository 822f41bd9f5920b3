"""Putting a sequence on hold while it runs, and resuming it.

On hold, a sequence's due steps wait: the scheduler does not claim them, so nothing is
sent, and each goes out when the sequence is resumed (with every check made then, as
ever: consent, quiet hours, the frequency cap, its goal). People still enter it. This
differs from `paused: true` in the sequence's file, which lets nobody in and lets people
leave at their next step: a hold is for "stop sending for now", the file's pause for
"this campaign is over".
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit
from backend.core.clock import Clock
from backend.core.models import SequenceHold


async def held(session: AsyncSession) -> frozenset[str]:
    """The names of the sequences on hold."""
    return frozenset(await session.scalars(select(SequenceHold.sequence)))


async def hold(session: AsyncSession, clock: Clock, sequence: str, actor: audit.Actor) -> bool:
    """Put `sequence` on hold; whether it was running."""
    if await session.get(SequenceHold, sequence) is not None:
        return False
    session.add(SequenceHold(sequence=sequence, held_at=clock.now(), held_by=actor.name))
    await audit.record(session, clock, actor, "hold_sequence", None, sequence=sequence)
    return True


async def resume(session: AsyncSession, clock: Clock, sequence: str, actor: audit.Actor) -> bool:
    """Let `sequence` send again; whether it was on hold."""
    found = await session.get(SequenceHold, sequence)
    if found is None:
        return False
    await session.delete(found)
    await audit.record(session, clock, actor, "resume_sequence", None, sequence=sequence)
    return True
