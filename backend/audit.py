"""The audit log: every write through the API records who made it, in the same
transaction as the write. Details name what changed, never personal data itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.clock import Clock
from backend.models import ApiToken, AuditEntry


async def record(
    session: AsyncSession,
    clock: Clock,
    caller: ApiToken,
    action: str,
    target: str | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditEntry(
            at=clock.now(),
            actor=caller.name,
            role=caller.role,
            token_id=caller.id,
            action=action,
            target=target,
            detail=detail,
        )
    )
    await session.flush()
