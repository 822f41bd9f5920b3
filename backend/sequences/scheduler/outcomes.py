"""Recording how a batch's sends went: each step's outcome, then the person's next step
(or a retry with backoff, the same send key when the outcome is unknown), in one
transaction of a few bulk statements whatever the batch's size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import Enrolment, SequenceWork
from backend.sequences.definition import SequenceDefinition
from backend.sequences.enrolment import ACTIVE
from backend.sequences.scheduler import progress
from backend.sequences.scheduler.facts import Attempts, load_attempts
from backend.sequences.scheduler.plans import Outcome

log = get_logger(__name__)


@dataclass(frozen=True)
class StepOutcomes:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    sequences: Mapping[str, SequenceDefinition]
    max_attempts: int
    retry_after: timedelta

    async def record(self, outcomes: list[Outcome]) -> None:
        """Each send's outcome on its step, then the next step (or a retry), in one
        transaction of a few statements, whatever the batch's size."""
        now = self.clock.now()
        async with self.sessions.begin() as session:
            rows = await session.execute(
                select(SequenceWork.id, SequenceWork.done_at, Enrolment.status, Enrolment.variants)
                .join(Enrolment, Enrolment.id == SequenceWork.enrolment_id)
                .where(SequenceWork.id.in_([o.plan.work_id for o in outcomes]))
                .order_by(SequenceWork.id)
                .with_for_update()
            )
            steps = {
                work_id: (done_at, status, variants) for work_id, done_at, status, variants in rows
            }
            attempts = await load_attempts(session, {o.plan.enrolment_id for o in outcomes})
            changes = _Changes()
            for outcome in outcomes:
                done_at, status, variants = steps.get(outcome.plan.work_id, (now, None, {}))
                # Done already: another worker ran it (its lease expired); gone: the
                # person was erased meanwhile.
                if done_at is None and status is not None:
                    self._apply(changes, outcome, status, variants, attempts, now)
            await changes.write(session)

    def _apply(
        self,
        changes: _Changes,
        result: Outcome,
        status: str,
        variants: dict[str, str | None],
        attempts: Attempts,
        now: datetime,
    ) -> None:
        plan, outcome = result.plan, result.outcome
        # The row keeps the send key it used (derived until now, see `deciding.Decider._plan_send`).
        finished = {"id": plan.work_id, "send_key": plan.text.send_key}
        enrolment: dict[str, Any] = {}
        if plan.new_variant and plan.text.follow_up is not None:
            enrolment["variants"] = {**variants, plan.step: plan.text.follow_up.variant}
        if result.retry and (plan.attempt < self.max_attempts or result.retry_at is not None):
            if enrolment:
                changes.enrolments.append({"id": plan.enrolment_id, **enrolment})
            changes.work.append(
                {**finished, **progress.finished(self.clock.now(), outcome, result.detail)}
            )
            backoff = self.retry_after * 2 ** (plan.attempt - 1)
            changes.new_work.append(
                {
                    "enrolment_id": plan.enrolment_id, "step": plan.step,
                    "due_at": result.retry_at or now + backoff,
                    "attempt": attempts.next(plan.enrolment_id, plan.step),
                    "send_key": plan.text.send_key if result.same_key else None,
                    "recorded": result.in_conversation,
                }
            )  # fmt: skip
            return
        if result.retry:
            outcome = "failed"
        changes.work.append(
            {**finished, **progress.finished(self.clock.now(), outcome, result.detail)}
        )
        if status == ACTIVE:
            sequence = self.sequences[plan.sequence]
            index = next(i for i, s in enumerate(sequence.steps) if s.id == plan.step)
            target = sequence.successors(index)[0]
            fields, following = progress.next_step(
                self.clock.now(), plan.enrolment_id, target, now, attempts
            )
            enrolment |= fields
            if following is not None:
                changes.new_work.append(following)
        if enrolment:
            changes.enrolments.append({"id": plan.enrolment_id, **enrolment})
        log.info(
            "sequence.step", sequence=plan.sequence, step=plan.step,
            profile_id=str(plan.profile_id), outcome=outcome,
            to=redact(IdentityKind.SMS, plan.text.to),
        )  # fmt: skip


@dataclass
class _Changes:
    """Rows to write when a batch's outcomes are recorded: work rows finished (by id),
    enrolments moved on (by id), and the next work rows."""

    work: list[dict[str, Any]] = field(default_factory=list)
    enrolments: list[dict[str, Any]] = field(default_factory=list)
    new_work: list[dict[str, Any]] = field(default_factory=list)

    async def write(self, session: AsyncSession) -> None:
        # Bulk statements by primary key: one executemany per table, no objects loaded.
        if self.work:
            await session.execute(update(SequenceWork), self.work)
        if self.enrolments:
            await session.execute(update(Enrolment), self.enrolments)
        if self.new_work:
            await session.execute(insert(SequenceWork), self.new_work)
