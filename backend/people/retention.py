"""Retention: what Parley keeps about people is deleted when it is older than
`retention:` in data/business.yml says, in the backend and in Rasa's tracker store.

- **conversations** (`conversations_days`): the events of Rasa's conversations, deleted
  through the bot's retention endpoint (channels/conversation_batch.py), the backend's
  copy of them consumed from RabbitMQ (`rasa_events`, by Rasa's timestamp), and the
  roll-ups of conversations whose last message is older (the daily counts stay);
- **messages** (`messages_days`): texts, calls and web pushes with their text and
  addresses, and held messages that have gone (sent, refused, cancelled);
- **events** (`events_days`): behaviour events (a score keeps what they added until the
  rules change and scores are rebuilt from the events that are left).

The job runs once a day, from the scheduler's loop (whichever worker gets there first:
the day's `slot` is unique), or when an admin asks (`POST /api/v1/retention/runs`). It
deletes in batches of `batch` rows, each its own short transaction with a pause
between, so that traffic is never blocked. Each run is a `retention_runs` row (visible
at `GET /api/v1/retention`) and an audit entry, with how much it deleted of each.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Delete, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient, RasaUnavailable
from backend.core import audit
from backend.core.audit import Actor
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import (
    ConversationRollup,
    Event,
    HeldMessage,
    Message,
    RasaEvent,
    RetentionRun,
)

log = get_logger(__name__)

RETENTION = audit.SystemActor("retention")
Days = Annotated[int, Field(ge=1, le=3650)]


class RetentionPolicy(BaseModel):
    """`retention:` in data/business.yml: how many days each kind of data is kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    conversations_days: Days = 365
    messages_days: Days = 365
    events_days: Days = 730


@dataclass
class Retention:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    policy: RetentionPolicy
    # None when Rasa's token is not set: the tracker store cannot be reached.
    conversations: RasaClient | None
    batch: int = 500
    pause: float = 0.05  # seconds between batches: others' statements go in between

    async def run_if_due(self) -> RetentionRun | None:
        """The day's run, unless some worker has made it already. A run that failed (Rasa
        could not be reached, say) is made again, in a slot of its own: `daily:<date>`,
        then `daily:<date>/2`, and so on."""
        day = f"daily:{self.clock.now().date().isoformat()}"
        async with self.sessions() as session:
            tried = list(
                await session.scalars(
                    select(RetentionRun.status).where(RetentionRun.slot.startswith(day))
                )
            )
        if any(status != "failed" for status in tried):
            return None
        return await self.run(RETENTION, f"{day}/{len(tried) + 1}" if tried else day)

    async def run(self, actor: Actor, slot: str | None = None) -> RetentionRun | None:
        """Delete what is older than the policy allows; the run's record (None when
        another run has this slot)."""
        started = self.clock.now()
        try:
            async with self.sessions.begin() as session:
                record = RetentionRun(
                    slot=slot or f"manual:{uuid.uuid4()}", started_at=started, status="running",
                    deleted={}, started_by=actor.name,
                )  # fmt: skip
                session.add(record)
        except IntegrityError:
            return None
        deleted: dict[str, Any] = {}
        error: str | None = None
        try:
            # The backend's own copy first: it needs no Rasa to be reached.
            cutoff = started - timedelta(days=self.policy.conversations_days)
            deleted["rasa_events"] = await self._in_batches(
                RasaEvent.__table__,
                select(RasaEvent.id).where(RasaEvent.timestamp < cutoff.timestamp()),
            )
            # The conversations' roll-ups name them (a phone number, a web session):
            # they go with the conversations. The daily counts name no one and stay.
            deleted["conversation_rollups"] = await self._in_batches(
                ConversationRollup.__table__,
                select(ConversationRollup.id).where(ConversationRollup.last_at < cutoff),
            )
            deleted["conversation_events"] = await self._conversations(started)
            cutoff = started - timedelta(days=self.policy.messages_days)
            deleted["held_messages"] = await self._in_batches(
                HeldMessage.__table__,
                select(HeldMessage.id).where(
                    HeldMessage.status != "held", HeldMessage.updated_at < cutoff
                ),
            )
            deleted["messages"] = await self._in_batches(
                Message.__table__, select(Message.id).where(Message.created_at < cutoff)
            )
            cutoff = started - timedelta(days=self.policy.events_days)
            deleted["events"] = await self._in_batches(
                Event.__table__, select(Event.id).where(Event.received_at < cutoff)
            )
        except Exception as failure:  # recorded on the run; the next run tries again
            log.exception("retention.failed")
            error = f"{type(failure).__name__}: {failure}"
        async with self.sessions.begin() as session:
            stored = await session.get(RetentionRun, record.id)
            assert stored is not None
            stored.finished_at = self.clock.now()
            stored.status = "failed" if error else "done"
            stored.deleted, stored.error = deleted, error
            await audit.record(
                session, self.clock, actor, "retention_run", str(record.id),
                status=stored.status, **{k: v for k, v in deleted.items()},
            )  # fmt: skip
        log.info("retention.ran", run=record.id, status=stored.status, **deleted)
        return stored

    async def _conversations(self, now: datetime) -> int | str:
        """Delete the tracker store's events older than the conversations' period."""
        if self.conversations is None or not self.conversations.configured:
            return "not reached: PARLEY_RASA_TOKEN is not set"
        before = now - timedelta(days=self.policy.conversations_days)
        total, more = 0, True
        while more:
            try:
                deleted, more = await self.conversations.delete_older_than(before, self.batch)
            except RasaUnavailable as error:
                raise RuntimeError(f"Rasa's tracker store could not be reached: {error}") from error
            total += deleted
            if more:
                await asyncio.sleep(self.pause)
        return total

    async def _in_batches(self, table: Any, ids: Any) -> int:
        """Delete the rows `ids` selects, `batch` at a time, oldest first."""
        total = 0
        while True:
            async with self.sessions.begin() as session:
                chosen = list(await session.scalars(ids.order_by(table.c.id).limit(self.batch)))
                if chosen:
                    statement: Delete = delete(table).where(table.c.id.in_(chosen))
                    await session.execute(statement)
            total += len(chosen)
            if len(chosen) < self.batch:
                return total
            await asyncio.sleep(self.pause)


async def recent_runs(session: AsyncSession, limit: int = 10) -> list[RetentionRun]:
    return list(
        await session.scalars(
            select(RetentionRun).order_by(RetentionRun.started_at.desc()).limit(limit)
        )
    )
