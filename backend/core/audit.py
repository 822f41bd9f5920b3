"""The audit log: every write through the API records who made it, in the same
transaction as the write. Details name what changed, never personal data itself."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.clock import Clock
from backend.core.models import AuditEntry


class Actor(Protocol):
    """Who made a change: an API token, or Parley itself."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def id(self) -> uuid.UUID | None: ...


@dataclass(frozen=True)
class SystemActor:
    """Parley acting on its own, e.g. the scheduler adding a step's points."""

    name: str
    role: str = "system"
    id: uuid.UUID | None = None


SCHEDULER = SystemActor("scheduler")


async def record(
    session: AsyncSession,
    clock: Clock,
    caller: Actor,
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
