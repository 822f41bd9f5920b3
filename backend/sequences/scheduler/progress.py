"""Moving a person through a sequence: a step's work row finished, the enrolment exited
or moved on to its next step (with that step's work row), as the deciding half and the
recording of send outcomes both do it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.logs import get_logger
from backend.core.models import Enrolment, SequenceWork
from backend.sequences.definition import EXIT
from backend.sequences.enrolment import COMPLETED, EXITED
from backend.sequences.scheduler.facts import Attempts

log = get_logger(__name__)


def finished(now: datetime, outcome: str, detail: str | None) -> dict[str, Any]:
    """A work row's fields once its step has run (its lease let go)."""
    return {
        "done_at": now, "outcome": outcome, "outcome_detail": detail,
        "lease_owner": None, "lease_until": None,
    }  # fmt: skip


def finish(work: SequenceWork, now: datetime, outcome: str, detail: str | None = None) -> None:
    for name, value in finished(now, outcome, detail).items():
        setattr(work, name, value)


def exit_sequence(
    work: SequenceWork,
    enrolment: Enrolment,
    now: datetime,
    reason: str,
    step_outcome: bool = False,
) -> None:
    """The person leaves the sequence here; the step's outcome is `exited` (or the
    reason itself, with `step_outcome`)."""
    finish(work, now, reason if step_outcome else "exited", reason)
    enrolment.status, enrolment.exit_reason = EXITED, reason
    enrolment.updated_at = now
    log.info(
        "sequence.exited", sequence=enrolment.sequence,
        profile_id=str(enrolment.profile_id), reason=reason,
    )  # fmt: skip


def next_step(
    now: datetime, enrolment_id: uuid.UUID, target: str, due: datetime, attempts: Attempts
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Moving an enrolment on to `target` (a step, or the exit): the enrolment's new
    fields, and the work row of that step, due at `due` (none at the exit)."""
    if target == EXIT:
        done = {"status": COMPLETED, "current_step": None, "exit_reason": "completed"}
        return {**done, "updated_at": now}, None
    following = {
        "enrolment_id": enrolment_id, "step": target, "due_at": due,
        "attempt": attempts.next(enrolment_id, target), "recorded": False,
    }  # fmt: skip
    return {"current_step": target, "updated_at": now}, following


def advance(
    session: AsyncSession,
    enrolment: Enrolment,
    now: datetime,
    target: str,
    due: datetime,
    attempts: Attempts,
) -> None:
    """Move the enrolment on to `target`, adding that step's work row to the session."""
    fields, following = next_step(now, enrolment.id, target, due, attempts)
    for name, value in fields.items():
        setattr(enrolment, name, value)
    if following is not None:
        session.add(SequenceWork(**following))
