"""Demo calls booked in conversation: one live booking per start time, and every booking,
move and cancellation recorded as an event on the person (so scores and sequences see it)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core import audit
from backend.core.audit import Actor
from backend.core.models import Demo
from backend.events import recording as events
from backend.events.recording import EventRecorder


class SlotTaken(Exception):
    """Someone else has a demo booked at that time."""


async def booked(session: AsyncSession, start: datetime, end: datetime) -> list[Demo]:
    """Live bookings starting in [start, end), earliest first."""
    return list(
        await session.scalars(
            select(Demo)
            .where(Demo.status == "booked", Demo.starts_at >= start, Demo.starts_at < end)
            .order_by(Demo.starts_at)
        )
    )


async def of_profile(session: AsyncSession, profile_id: uuid.UUID, after: datetime) -> list[Demo]:
    """A person's live bookings that have not started yet."""
    return list(
        await session.scalars(
            select(Demo)
            .where(Demo.profile_id == profile_id, Demo.status == "booked", Demo.starts_at >= after)
            .order_by(Demo.starts_at)
        )
    )


async def book(
    session: AsyncSession,
    recorder: EventRecorder,
    actor: Actor,
    profile_id: uuid.UUID,
    starts_at: datetime,
    minutes: int,
    conversation_id: str | None,
) -> Demo:
    now = recorder.directory.clock.now()
    demo = Demo(
        profile_id=profile_id, starts_at=starts_at, minutes=minutes, status="booked",
        conversation_id=conversation_id, created_at=now, updated_at=now,
    )  # fmt: skip
    async with _slot(starts_at, session):
        session.add(demo)
    await _event(session, recorder, actor, demo, "demo_booked")
    await audit.record(session, recorder.directory.clock, actor, "book_demo", str(profile_id))
    return demo


async def move(
    session: AsyncSession, recorder: EventRecorder, actor: Actor, demo: Demo, starts_at: datetime
) -> Demo:
    previous = demo.starts_at
    async with _slot(starts_at, session):
        demo.starts_at = starts_at
        demo.updated_at = recorder.directory.clock.now()
    await _event(session, recorder, actor, demo, "demo_rescheduled", previous=previous.isoformat())
    await audit.record(session, recorder.directory.clock, actor, "move_demo", str(demo.profile_id))
    return demo


async def cancel(session: AsyncSession, recorder: EventRecorder, actor: Actor, demo: Demo) -> Demo:
    demo.status = "cancelled"
    demo.updated_at = recorder.directory.clock.now()
    await session.flush()
    await _event(session, recorder, actor, demo, "demo_cancelled")
    await audit.record(
        session, recorder.directory.clock, actor, "cancel_demo", str(demo.profile_id)
    )
    return demo


@asynccontextmanager
async def _slot(starts_at: datetime, session: AsyncSession) -> AsyncIterator[None]:
    """Make the changes in the block, in a savepoint: the partial unique index on live
    start times decides between two people who pick the same slot at the same moment."""
    await session.flush()  # earlier changes are not this savepoint's to lose
    try:
        async with session.begin_nested():
            yield
            await session.flush()
    except IntegrityError as taken:
        raise SlotTaken(starts_at.isoformat()) from taken


async def _event(
    session: AsyncSession,
    recorder: EventRecorder,
    actor: Actor,
    demo: Demo,
    type_: str,
    **extra: str,
) -> None:
    await recorder.record(
        session,
        [
            events.Incoming(
                type=type_,
                properties={
                    "demo_id": str(demo.id),
                    "starts_at": demo.starts_at.isoformat(),
                    **extra,
                },
                occurred_at=None,
                idempotency_key=None,
                profile_id=demo.profile_id,
            )
        ],
        actor,
    )
