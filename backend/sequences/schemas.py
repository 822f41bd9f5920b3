"""Request and response bodies of the sequence routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
)


class SequenceOut(BaseModel):
    """A follow-up sequence loaded from data/sequences/ (its id is its name)."""

    id: str
    description: str | None
    paused: bool = Field(description="paused in its file: nobody enters, people leave")
    on_hold: bool = Field(
        description="put on hold at run time: its steps wait, nothing is sent until resumed"
    )
    trigger: str = Field(description="event:<type>, intent, form_completed, segment_entered or api")
    steps: list[str] = Field(description="the step ids, in file order")


class SequenceList(BaseModel):
    items: list[SequenceOut]


class EnrolmentIn(BaseModel):
    """Enrol a person; the sequence's entry conditions apply (409 with the reason)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"profile_id": "0b5a1d2e-7c1f-4f57-9a43-3f0f1f6e2a10"}]},
    )

    profile_id: uuid.UUID
    # What templates see as event.properties (the event type is `enrolled`).
    properties: dict[Annotated[str, Field(min_length=1, max_length=64)], JsonValue] = Field(
        default_factory=dict, max_length=20
    )


class EnrolmentOut(BaseModel):
    """One person in one sequence."""

    id: uuid.UUID
    sequence: str
    profile_id: uuid.UUID
    status: Literal["active", "exited", "completed"]
    exit_reason: str | None
    current_step: str | None
    enrolled_at: datetime


class LiftOut(BaseModel):
    """A variant's goal rate minus the holdout's, with its 95% confidence interval
    (Newcombe's hybrid score interval for a difference of two proportions)."""

    difference: float = Field(description="goal rate of the variant minus the holdout's")
    low: float = Field(description="lower end of the 95% interval")
    high: float = Field(description="upper end of the 95% interval")


class ArmStats(BaseModel):
    """One arm of a send step: a variant, or the holdout who get nothing."""

    name: str = Field(
        description="the variant's name ('default' for a step with one template) or 'holdout'"
    )
    kind: Literal["variant", "holdout"]
    share: float | None = Field(
        description="the part of the people reaching the step the file sends to this arm; "
        "null for an arm no longer in the file"
    )
    assigned: int = Field(description="enrolments put in this arm at this step")
    sent: int = Field(description="of those, sent a message for this step (it did not fail)")
    delivered: int = Field(description="of those, the message was reported delivered")
    replied: int = Field(
        description="wrote back (not STOP, START or HELP) after the step's message, or for "
        "the holdout after the step was reached"
    )
    goal_reached: int | None = Field(
        description="had a goal event after enrolling; null when the sequence has no goal"
    )
    opted_out: int = Field(description="withdrew SMS marketing consent after enrolling")
    goal_rate: float | None = Field(description="goal_reached / assigned")
    lift: LiftOut | None = Field(
        description="this variant over the holdout; null for the holdout, without a "
        "holdout or a goal, or when either arm has nobody"
    )


class StepStats(BaseModel):
    """One send step: its figures over every arm, then arm by arm."""

    id: str
    holdout: float = Field(description="the holdout share the file gives the step")
    assigned: int
    sent: int
    delivered: int
    replied: int
    goal_reached: int | None
    opted_out: int
    arms: list[ArmStats]


class SequenceTotals(BaseModel):
    enrolled: int
    active: int
    completed: int
    exited: int
    exited_by_reason: dict[str, int] = Field(
        description="exited enrolments by reason: opted_out, replied, goal_reached, paused, …"
    )
    sent: int = Field(description="enrolments sent at least one message (that did not fail)")
    delivered: int = Field(description="enrolments with at least one message delivered")
    replied: int = Field(description="enrolments whose person wrote back after enrolling")
    goal_reached: int | None = Field(description="null when the sequence has no goal")
    opted_out: int
    goal_rate: float | None = Field(description="goal_reached / enrolled")


class SequenceStats(BaseModel):
    """The results of a follow-up sequence (docs/sequences.md, "Results")."""

    sequence: str
    since: datetime | None = Field(description="only enrolments from this time (the query)")
    goals: list[str] = Field(description="the goal event types (exit_when.goal)")
    confidence: float = Field(description="the confidence level of the lift intervals")
    totals: SequenceTotals
    steps: list[StepStats] = Field(description="the send steps, in file order")
