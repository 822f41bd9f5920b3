"""Claiming due sequence work with a lease, so two workers never run one step: `SELECT …
FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite one claimer at a time in the process
(`sqlite_lock`), and every claim a conditional update."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.models import Enrolment, SequenceWork

_SQLITE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def sqlite_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _SQLITE_LOCKS.get(loop)
    if lock is None:
        lock = _SQLITE_LOCKS[loop] = asyncio.Lock()
    return lock


async def claim(
    session: AsyncSession,
    now: datetime,
    owner: str,
    limit: int,
    lease: timedelta,
    held: frozenset[str] = frozenset(),
) -> list[int]:
    """Lease up to `limit` due rows (not done, not leased or lease expired, not of a
    sequence on hold) to `owner`; the earliest due first; their ids. Call inside a
    transaction."""
    free = or_(SequenceWork.lease_until.is_(None), SequenceWork.lease_until <= now)
    query = (
        select(SequenceWork.id)
        .where(SequenceWork.done_at.is_(None), SequenceWork.due_at <= now, free)
        .order_by(SequenceWork.due_at, SequenceWork.id)
        .limit(limit)
    )
    if held:
        # Only while something is on hold: the usual claim stays one table's index.
        query = query.where(
            ~exists().where(Enrolment.id == SequenceWork.enrolment_id, Enrolment.sequence.in_(held))
        )
    if session.get_bind().dialect.name == "postgresql":
        # One statement: rows another worker is claiming right now are skipped.
        leased = await session.scalars(
            update(SequenceWork)
            .where(SequenceWork.id.in_(query.with_for_update(skip_locked=True)))
            .values(lease_owner=owner, lease_until=now + lease)
            .returning(SequenceWork.id)
            .execution_options(synchronize_session=False)
        )
        return sorted(leased)
    ids = list(await session.scalars(query))
    # SQLite: take only the rows nobody leased since they were read.
    claimed: list[int] = []
    for work_id in ids:
        result = await session.execute(
            update(SequenceWork)
            .where(SequenceWork.id == work_id, SequenceWork.done_at.is_(None), free)
            .values(lease_owner=owner, lease_until=now + lease)
        )
        if getattr(result, "rowcount", 0):
            claimed.append(work_id)
    return claimed


async def locked(
    session: AsyncSession, work_ids: Sequence[int]
) -> list[tuple[SequenceWork, Enrolment]]:
    """These work rows with their enrolments, locked for this transaction (PostgreSQL)."""
    rows = await session.execute(
        select(SequenceWork, Enrolment)
        .join(Enrolment, Enrolment.id == SequenceWork.enrolment_id)
        .where(SequenceWork.id.in_(work_ids))
        .order_by(SequenceWork.id)
        .with_for_update()
    )
    return [(work, enrolment) for work, enrolment in rows.all()]
