"""A person's messages, in and out, on every channel, as their record says."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.models import Message


async def of_person(
    session: AsyncSession, profile_id: uuid.UUID, limit: int, before: int | None = None
) -> tuple[list[Message], bool]:
    """Their messages newest first, older than `before`; and whether there are more."""
    query = select(Message).where(Message.profile_id == profile_id)
    if before is not None:
        query = query.where(Message.id < before)
    rows = list(await session.scalars(query.order_by(Message.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit
