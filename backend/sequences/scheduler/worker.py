"""The scheduler: runs the steps of follow-up sequences when they fall due.

Due work lives in the `sequence_work` table, one row per step visit. A worker claims due
rows with a lease (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite one
claimer at a time in the process, and every claim is a conditional update, so a row
leased by someone else is never taken), runs each step, records its outcome, and
schedules the next step. A killed worker's lease expires and its rows are claimed again.
A send is keyed by (enrolment, step, attempt), and a retry after an unknown outcome keeps
the key, so the door (messaging.sms_door, messaging.call_door) reconciles it with
Twilio's record instead of sending twice.

Guards are checked at the moment of sending: the global pause, consent on the channel,
and the doors' guards on marketing messages (backend.messaging.guards: quiet hours in
the person's time zone and the frequency cap, which the step waits out). The loop also
releases the marketing messages the doors held (backend.messaging.held). Each
follow-up is recorded in the person's Rasa conversation before it goes
(backend.conversations.rasa_client). docs/sequences.md ("How sequences run") describes
it for marketers and operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import SequenceWork
from backend.messaging.call_door import CallDoor
from backend.messaging.email_door import EmailDoor
from backend.messaging.guards import ContactRules
from backend.messaging.held import HeldMessages
from backend.messaging.sms_door import SmsDoor
from backend.messaging.web_door import WebDoor
from backend.people.profiles import ProfileDirectory
from backend.people.retention import Retention
from backend.sequences import holds
from backend.sequences.definition import SequenceDefinition
from backend.sequences.scheduler import claiming
from backend.sequences.scheduler.deciding import Decider, RecordsPoints
from backend.sequences.scheduler.outcomes import StepOutcomes
from backend.sequences.scheduler.plans import PausePlan, SendPlan
from backend.sequences.scheduler.sending import Sender
from backend.sequences.segment_entries import sweep_segment_entries

log = get_logger(__name__)

# The shortest sleep between rounds, so a step nobody can claim never spins a worker.
MIN_SLEEP = 0.02
# How often held messages whose time has come are looked for.
RELEASE_EVERY = timedelta(seconds=1)
# How often a worker looks whether the day's retention run is still to be made (or to
# be made again: one that failed, say because Rasa was down, is tried again).
RETENTION_EVERY = timedelta(hours=1)
# The first look waits for the other processes to be up: `parley run` starts them all
# at once, and Rasa, whose tracker store the run also clears, takes about half a minute.
RETENTION_FIRST_AFTER = timedelta(minutes=2)


@dataclass
class Worker:
    """Claims due sequence work and runs it. `tick()` runs one round; `run()` loops."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    sequences: Mapping[str, SequenceDefinition]
    directory: ProfileDirectory
    door: SmsDoor | None
    business: Mapping[str, Any]
    record_points: RecordsPoints
    calls: CallDoor | None = None
    # Rasa's HTTP API, to record each follow-up in the person's conversation before it
    # is sent; None when Rasa's token is not set (the texts then go unrecorded).
    conversations: RasaClient | None = None
    # The web door (None when Rasa's token is not set: web follow-ups cannot go).
    web: WebDoor | None = None
    # The e-mail door (None: e-mail follow-ups wait until it is set up).
    emails: EmailDoor | None = None
    # Marketing messages the doors held, delivered by this loop when they may go.
    held: HeldMessages | None = None
    # The retention job, run once a day by whichever worker gets there first.
    retention: Retention | None = None
    # The business's quiet hours and caps (data/business.yml `follow_ups:`), which a
    # sequence may tighten; the doors apply them again as they send.
    rules: ContactRules = field(default_factory=ContactRules)
    owner: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    batch: int = 100
    lease: timedelta = timedelta(seconds=60)
    poll_seconds: float = 1.0
    max_attempts: int = 5
    retry_after: timedelta = timedelta(seconds=60)
    paused: bool = False
    # Batches in flight at once in `run` (each on its own connection); 1 on SQLite.
    concurrency: int = 1
    # After claiming less than a batch, how long due steps gather before the next claim.
    gather_seconds: float = 0.1
    # How often segments that trigger sequences are compared with their last members.
    sweep_every: timedelta = timedelta(seconds=60)

    # The three halves of running a batch, over this worker's settings.
    @property
    def decider(self) -> Decider:
        return Decider(
            self.clock, self.sequences, self.directory, self.business, self.record_points,
            self.rules, self.owner,
        )  # fmt: skip

    @property
    def sender(self) -> Sender:
        return Sender(
            self.sessions, self.clock, self.door, self.calls, self.conversations, self.web,
            self.emails,
        )  # fmt: skip

    @property
    def outcomes(self) -> StepOutcomes:
        return StepOutcomes(
            self.sessions, self.clock, self.sequences, self.max_attempts, self.retry_after
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run batches until `stop` is set, up to `concurrency` batches in
        flight, so one batch's database work overlaps another's waiting on Twilio and
        Rasa; a claim that finds nothing sleeps until the next step falls due. Batches
        in flight are finished before it returns."""
        running: set[asyncio.Task[None]] = set()
        swept: datetime | None = None
        released: datetime | None = None
        retained = self.clock.now() - RETENTION_EVERY + RETENTION_FIRST_AFTER
        while not stop.is_set():
            now = self.clock.now()
            if swept is None or now - swept >= self.sweep_every:
                swept = now
                await self.sweep_segments()
            if released is None or now - released >= RELEASE_EVERY:
                released = now
                await self.release_held()
            if now - retained >= RETENTION_EVERY:
                retained = now
                await self.retain()
            if len(running) >= self.concurrency:
                await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                continue
            ids: list[int] = []
            if not self.paused:
                try:
                    ids = await self.claim()
                except Exception:  # the database is briefly away: try again later
                    log.exception("scheduler.claim_failed", owner=self.owner)
            if ids:
                task = asyncio.create_task(self._run_claimed(ids))
                running.add(task)
                task.add_done_callback(running.discard)
                if len(ids) < self.batch:
                    # Less than a batch was due: let the next steps gather for a moment
                    # rather than claim them one or two at a time, each a round of
                    # statements of its own.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.gather_seconds)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), await self._until_next_due())
        await asyncio.gather(*running, return_exceptions=True)

    async def _run_claimed(self, work_ids: list[int]) -> None:
        try:
            await self.run_batch(work_ids)
        except Exception:  # one bad batch must not stop the scheduler; its leases expire
            log.exception("scheduler.batch_failed", owner=self.owner, rows=len(work_ids))

    async def sweep_segments(self) -> int:
        """Enrol people who entered a segment some sequence triggers on since the last
        sweep (backend.sequences.segment_entries); how many were enrolled."""
        try:
            if self._on_sqlite():
                async with claiming.sqlite_lock():
                    return await sweep_segment_entries(
                        self.sessions, self.sequences.values(), self.clock, self.directory.rules
                    )
            return await sweep_segment_entries(
                self.sessions, self.sequences.values(), self.clock, self.directory.rules
            )
        except Exception:  # the next sweep tries again
            log.exception("scheduler.sweep_failed", owner=self.owner)
            return 0

    async def release_held(self) -> int:
        """Deliver the held messages whose time has come (backend.messaging.held)."""
        if self.held is None:
            return 0
        try:
            return await self.held.release_due()
        except Exception:  # the next round tries again
            log.exception("scheduler.release_failed", owner=self.owner)
            return 0

    async def retain(self) -> None:
        """Make the day's retention run, unless another worker has (people.retention)."""
        if self.retention is None:
            return
        try:
            await self.retention.run_if_due()
        except Exception:  # the next hour tries again
            log.exception("scheduler.retention_failed", owner=self.owner)

    def _on_sqlite(self) -> bool:
        bind = self.sessions.kw.get("bind")
        return bind is not None and bind.dialect.name == "sqlite"

    async def _until_next_due(self) -> float:
        """How long to sleep: until the earliest free step falls due, at most the poll
        interval (steps enrolled meanwhile, or leases expiring, are found by polling)."""
        if self.paused:
            return self.poll_seconds
        try:
            async with self.sessions() as session:
                due = await session.scalar(
                    select(func.min(SequenceWork.due_at)).where(
                        SequenceWork.done_at.is_(None), SequenceWork.lease_until.is_(None)
                    )
                )
        except Exception:  # the database is briefly away: poll as usual
            log.warning("scheduler.next_due_unknown", owner=self.owner, exc_info=True)
            return self.poll_seconds
        if due is None:
            return self.poll_seconds
        wait = (due - self.clock.now()).total_seconds()
        return min(self.poll_seconds, max(MIN_SLEEP, wait))

    async def tick(self) -> int:
        """Claim a batch of due work and run it; how many rows ran."""
        if self.paused:
            return 0
        ids = await self.claim()
        if ids:
            await self.run_batch(ids)
        return len(ids)

    async def claim(self) -> list[int]:
        now = self.clock.now()
        if self._on_sqlite():
            # SQLite has one writer: one claimer at a time in this process.
            async with claiming.sqlite_lock(), self.sessions.begin() as session:
                on_hold = await holds.held(session)
                return await claiming.claim(
                    session, now, self.owner, self.batch, self.lease, on_hold
                )
        async with self.sessions.begin() as session:
            on_hold = await holds.held(session)
            return await claiming.claim(session, now, self.owner, self.batch, self.lease, on_hold)

    async def run_step(self, work_id: int) -> None:
        """Run one claimed row (nothing if it is done or leased to someone else)."""
        await self.run_batch([work_id])

    async def run_batch(self, work_ids: Sequence[int]) -> None:
        """Run claimed rows together: decide every step in one transaction, send the
        texts side by side through the door, and record every outcome in one more."""
        try:
            async with self.sessions.begin() as session:
                plans = await self._decide_all(session, work_ids)
        except Exception:
            if len(work_ids) == 1:
                raise
            # One step failed and took the batch's transaction with it: decide each on
            # its own, so that one bad step does not hold back the others.
            log.warning("scheduler.batch_split", owner=self.owner, rows=len(work_ids))
            plans = []
            for work_id in work_ids:
                try:
                    async with self.sessions.begin() as session:
                        plans += await self._decide_all(session, [work_id])
                except Exception:  # its lease ends, and it is tried again
                    log.exception("scheduler.step_failed", work_id=work_id, owner=self.owner)
        sender = self.sender
        await asyncio.gather(
            *(sender.pause(p.conversation) for p in plans if isinstance(p, PausePlan))
        )
        sends = [p for p in plans if isinstance(p, SendPlan)]
        if sends:
            await self.outcomes.record(await sender.send_all(sends))

    async def _decide_all(
        self, session: AsyncSession, work_ids: Sequence[int]
    ) -> list[SendPlan | PausePlan]:
        return await self.decider.decide_all(session, work_ids)
