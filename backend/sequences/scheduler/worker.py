"""The scheduler: runs the steps of follow-up sequences when they fall due.

Due work lives in the `sequence_work` table, one row per step visit. A worker claims due
rows with a lease (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite one
claimer at a time in the process, and every claim is a conditional update, so a row
leased by someone else is never taken), runs each step, records its outcome, and
schedules the next step. A killed worker's lease expires and its rows are claimed again.
A send is keyed by (enrolment, step, attempt), and a retry after an unknown outcome keeps
the key, so the door (messaging.sms_door, messaging.call_door) reconciles it with
Twilio's record instead of sending twice.

Guards are checked at the moment of sending: the global pause, quiet hours in the
person's time zone (the send moves to the next allowed minute), consent on the channel,
and the frequency caps on marketing messages. Each follow-up is recorded in the person's
Rasa conversation before it goes (backend.conversations.rasa_client). docs/sequences.md ("How
sequences run") describes it for marketers and operators.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.consent import ledger as consent
from backend.consent.ledger import Channel, Purpose, State
from backend.conversations.rasa_client import FollowUpRecord, RasaClient, RasaUnavailable
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import (
    Enrolment,
    Event,
    Message,
    Profile,
    SequenceWork,
)
from backend.handoffs import handoff as handoffs
from backend.messaging.call_door import CallDoor, OutboundCall, Placed
from backend.messaging.sms_door import (
    FollowUp,
    MessagePurpose,
    OutboundText,
    Refusal,
    SendRefused,
    Sent,
    SmsDoor,
)
from backend.people.profiles import ProfileDirectory
from backend.scoring import rules as scoring
from backend.segments import store as segment_store
from backend.sequences.definition import (
    DEFAULT_PER_7D,
    DEFAULT_PER_24H,
    DEFAULT_QUIET_FROM,
    DEFAULT_QUIET_UNTIL,
    EXIT,
    BranchStep,
    Condition,
    EventCondition,
    FollowUpDefaults,
    HandoffStep,
    RepliedCondition,
    ScoreCondition,
    SegmentCondition,
    SendChannel,
    SendStep,
    SequenceDefinition,
    UpdateStep,
    WaitStep,
)
from backend.sequences.enrolment import ACTIVE, COMPLETED, EXITED, matches
from backend.sequences.scheduler import claiming
from backend.sequences.scheduler.facts import (
    Attempts,
    Facts,
    Goal,
    address_of,
    load_attempts,
    load_facts,
)
from backend.sequences.scheduler.timing import quiet_until, roll_for, wait_until, zone_for
from backend.sequences.segment_entries import sweep_segment_entries
from backend.sequences.templates import render, template_context

log = get_logger(__name__)

# The shortest sleep between rounds, so a step nobody can claim never spins a worker.
MIN_SLEEP = 0.02
# Consent refusals: the person does not want this text; never retried.
CONSENT_KINDS = frozenset({Refusal.CONSENT_REFUSED, Refusal.RECIPIENT_UNSUBSCRIBED})
# The text may or may not have reached Twilio: try again later with the same send key,
# so the door looks it up before sending.
IN_DOUBT_KINDS = frozenset({Refusal.TWILIO_UNAVAILABLE, Refusal.SEND_IN_PROGRESS})
# The text was not sent (the number's pace was full): try again later, as a new send.
NOT_SENT_KINDS = frozenset({Refusal.SENDER_BUSY})


# ---------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class _SendPlan:
    work_id: int
    enrolment_id: uuid.UUID
    sequence: str
    profile_id: uuid.UUID
    step: str
    attempt: int
    text: OutboundText
    asks: str | None
    channel: Channel = Channel.SMS
    # False for a retry after an unknown outcome (a new row with the earlier row's key)
    # or after the sending number was busy (`SequenceWork.recorded`): it was recorded
    # before that try. A row run again after its worker died may or may not have been
    # recorded, so it is recorded again: a text read out of context is worse than a
    # conversation that shows it twice.
    record: bool = True
    # The variant was rolled for this send: keep it on the enrolment with the outcome.
    new_variant: bool = False


@dataclass(frozen=True)
class _PausePlan:
    """After a hand-off step: pause the bot in this conversation."""

    conversation: str


@dataclass(frozen=True)
class _Outcome:
    """How a send went, to be recorded on its step."""

    plan: _SendPlan
    outcome: str
    detail: str | None = None
    # Try again later; with `same_key`, as the same send (its outcome is unknown).
    retry: bool = False
    same_key: bool = False
    # The text is in the person's conversation (the door or the calls were asked only
    # once it was), so a retry does not record it again.
    in_conversation: bool = False


class RecordsPoints(Protocol):
    """Records a step's points as an event on the person, in the caller's transaction
    (events.recording.EventRecorder.record_points: recording an event may enrol, so
    `events` sits above `sequences` and the worker is handed the function)."""

    async def __call__(
        self, session: AsyncSession, profile_id: uuid.UUID, properties: dict[str, Any]
    ) -> None: ...


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
    # The business's quiet hours and caps (data/business.yml `follow_ups:`).
    defaults: FollowUpDefaults = field(default_factory=FollowUpDefaults)
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

    @property
    def business_timezone(self) -> str:
        return str(self.business.get("timezone") or "UTC")

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and run batches until `stop` is set, up to `concurrency` batches in
        flight, so one batch's database work overlaps another's waiting on Twilio and
        Rasa; a claim that finds nothing sleeps until the next step falls due. Batches
        in flight are finished before it returns."""
        running: set[asyncio.Task[None]] = set()
        swept: datetime | None = None
        while not stop.is_set():
            now = self.clock.now()
            if swept is None or now - swept >= self.sweep_every:
                swept = now
                await self.sweep_segments()
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
                return await claiming.claim(session, now, self.owner, self.batch, self.lease)
        async with self.sessions.begin() as session:
            return await claiming.claim(session, now, self.owner, self.batch, self.lease)

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
        await asyncio.gather(
            *(self._pause(p.conversation) for p in plans if isinstance(p, _PausePlan))
        )
        sends = [p for p in plans if isinstance(p, _SendPlan)]
        if sends:
            await self._record_outcomes(await self._send_all(sends))

    # -- deciding, in one transaction

    async def _decide_all(
        self, session: AsyncSession, work_ids: Sequence[int]
    ) -> list[_SendPlan | _PausePlan]:
        now = self.clock.now()
        mine = [
            (work, enrolment)
            for work, enrolment in await _locked(session, work_ids)
            if work.done_at is None and work.lease_owner == self.owner
        ]
        if not mine:
            return []
        facts = await load_facts(session, self.directory, [e for _, e in mine], self.sequences, now)
        plans: list[_SendPlan | _PausePlan] = []
        for work, enrolment in mine:
            plan = await self._decide(session, work, enrolment, facts, now)
            if plan is not None:
                plans.append(plan)
        return plans

    async def _decide(
        self,
        session: AsyncSession,
        work: SequenceWork,
        enrolment: Enrolment,
        facts: Facts,
        now: datetime,
    ) -> _SendPlan | _PausePlan | None:
        if enrolment.status != ACTIVE:
            self._finish(work, "enrolment_ended", enrolment.exit_reason)
            return None
        sequence = self.sequences.get(enrolment.sequence)
        if sequence is None:
            self._exit(work, enrolment, "sequence_removed")
            return None
        if sequence.paused:
            self._exit(work, enrolment, "paused")
            return None
        profile = facts.profiles.get(enrolment.profile_id)
        if profile is None:
            self._exit(work, enrolment, "profile_gone")
            return None
        if facts.consent_state(profile.id, Channel.SMS, Purpose.MARKETING) is State.WITHDRAWN:
            self._exit(work, enrolment, "opted_out")
            return None
        if sequence.exit_when.replied and facts.replied_since(profile.id, enrolment.enrolled_at):
            self._exit(work, enrolment, "replied")
            return None
        if self._goal_reached(sequence, enrolment, facts.goals.get(profile.id, [])):
            self._exit(work, enrolment, "goal_reached")
            return None
        index = next((i for i, s in enumerate(sequence.steps) if s.id == work.step), None)
        if index is None:
            self._exit(work, enrolment, "step_removed")
            return None
        step = sequence.steps[index]
        phone = address_of(profile, IdentityKind.SMS) or profile.phone
        zone = zone_for(profile.timezone, phone, self.business_timezone)
        following = sequence.successors(index)[0]

        if isinstance(step, WaitStep):
            self._finish(work, "waited")
            due = wait_until(now, step.plan, zone)
            self._advance(session, enrolment, following, due, facts.attempts)
            return None
        if isinstance(step, UpdateStep):
            await self.directory.update(session, profile, {}, step.update.set_)
            if points := step.update.add_points:
                await self._add_points(session, profile.id, sequence.name, step.id, points)
            self._finish(work, "updated")
            self._advance(session, enrolment, following, now, facts.attempts)
            return None
        if isinstance(step, BranchStep):
            target = sequence.successors(index)[-1]  # otherwise, or the next step
            for case in step.branch:
                if await self._holds(session, case.when, profile, enrolment, now, facts):
                    target = case.goto
                    break
            self._finish(work, "branched", f"to {target}")
            self._advance(session, enrolment, target, now, facts.attempts)
            return None
        if isinstance(step, HandoffStep):
            return await self._hand_off(session, work, enrolment, profile, phone, step)
        assert isinstance(step, SendStep)

        message = step.send
        marketing = message.purpose is Purpose.MARKETING
        if marketing:
            quiet = sequence.quiet_hours or self.defaults.quiet_hours
            start, end = (
                (quiet.start, quiet.end) if quiet else (DEFAULT_QUIET_FROM, DEFAULT_QUIET_UNTIL)
            )
            later = quiet_until(now, start, end, zone)
            if later is not None:
                work.due_at, work.lease_owner, work.lease_until = later, None, None
                work.outcome, work.outcome_detail = "rescheduled", "quiet hours"
                return None
        route = self._route(message.channel, message.purpose, profile, phone, facts)
        if route is None:
            self._finish(work, "skipped_consent")
            self._advance(session, enrolment, following, now, facts.attempts)
            return None
        channel, to = route
        # The variant is kept on the enrolment with the send's outcome (one write fewer
        # here); until then it is the same roll again.
        new_variant = step.id not in enrolment.variants
        if new_variant:
            variant = message.variant_for(roll_for(profile.id, sequence.name, step.id))
            chosen = variant.name if variant else None
        else:
            chosen = enrolment.variants[step.id]
        if chosen is None:
            enrolment.variants = {**enrolment.variants, step.id: None}
            self._finish(work, "held_out")
            self._advance(session, enrolment, following, now, facts.attempts)
            return None
        # A row's own send key is derived, not stored (one write fewer): only a retry
        # after an unknown outcome stores a key, the earlier row's.
        own_key = f"seq:{enrolment.id}:{step.id}:{work.attempt}"
        key = work.send_key or own_key
        if marketing:
            capped_until = self._capped_until(
                sequence, facts.marketing.get(profile.id, []), now, key
            )
            if capped_until is not None:
                work.due_at, work.lease_owner, work.lease_until = capped_until, None, None
                work.outcome, work.outcome_detail = "rescheduled", "frequency cap"
                return None
        if to is None:
            self._finish(work, "failed", f"no {channel.value} address to send to")
            self._advance(session, enrolment, following, now, facts.attempts)
            return None
        template = next(v.template for v in message.choices if v.name == chosen)
        context = template_context(
            {
                **{name: getattr(profile, name) for name in ("first_name", "last_name",
                                                             "email", "company", "timezone")},
                "phone": profile.phone or phone,
                "attributes": profile.attributes,
                "score": scoring.current_score(profile, self.directory.rules, now),
            },
            {"type": enrolment.trigger_type, "properties": enrolment.trigger_properties},
            self.business,
        )  # fmt: skip
        try:
            body = render(template, context)
        except Exception as error:  # a marketer's template failing on this person
            self._finish(work, "failed", f"the template failed: {error}")
            self._advance(session, enrolment, following, now, facts.attempts)
            return None
        purpose = MessagePurpose.MARKETING if marketing else MessagePurpose.TRANSACTIONAL
        if marketing:
            facts.note_marketing(profile.id, now, key)
        return _SendPlan(
            work.id, enrolment.id, sequence.name, enrolment.profile_id, step.id, work.attempt,
            OutboundText(
                to=to, body=body, purpose=purpose, send_key=key,
                follow_up=FollowUp(enrolment.id, step.id, chosen),
            ),
            message.asks, channel, record=key == own_key and not work.recorded,
            new_variant=new_variant,
        )  # fmt: skip

    def _route(
        self,
        wanted: SendChannel,
        purpose: Purpose,
        profile: Profile,
        phone: str | None,
        facts: Facts,
    ) -> tuple[Channel, str | None] | None:
        """The channel and address a text goes by, if consent allows it now: the step's
        channel, or for `best` the reachable channel the person most recently agreed to
        (for transactional texts with no agreement on record: SMS, then web)."""
        web = address_of(profile, IdentityKind.WEB)
        addresses = {Channel.SMS: phone, Channel.WEB: web, Channel.VOICE: phone}
        if wanted is not SendChannel.BEST:
            channel = Channel(wanted.value)
            if not facts.may_send(profile.id, channel, purpose):
                return None
            return channel, addresses[channel]
        known = facts.consents.get(profile.id, {})
        newest_first = sorted(
            ((c, state, since) for (c, p), (state, since) in known.items() if p is purpose),
            key=lambda item: item[2],
            reverse=True,
        )
        states = {c: state for c, state, _ in newest_first if c in addresses}
        agreed = [c for c, state in states.items() if state is State.GRANTED]
        fallback = [] if purpose is Purpose.MARKETING else [Channel.SMS, Channel.WEB]
        for channel in [*agreed, *fallback]:
            allowed = consent.allows(states.get(channel, State.NONE), purpose)
            if allowed and addresses[channel] is not None:
                return channel, addresses[channel]
        return None

    async def _add_points(
        self, session: AsyncSession, profile_id: uuid.UUID, sequence: str, step: str, points: float
    ) -> None:
        """A sequence's points, recorded as an event so they decay and survive a rebuild."""
        properties = {"sequence": sequence, "step": step, "points": points}
        await self.record_points(session, profile_id, properties)

    async def _hand_off(
        self,
        session: AsyncSession,
        work: SequenceWork,
        enrolment: Enrolment,
        profile: Profile,
        phone: str | None,
        step: HandoffStep,
    ) -> _PausePlan | None:
        """Open a hand-off on the person's conversation (their texts, else their web
        chat) with the step's words for the agent; the sequence ends for them."""
        web = address_of(profile, IdentityKind.WEB)
        conversation, channel = (phone, "sms") if phone else (web, "web")
        if conversation is None:
            self._finish(work, "failed", "no conversation to hand off")
            enrolment.status, enrolment.exit_reason = EXITED, "handed_off"
            return None
        handoff, _ = await handoffs.open_handoff(
            session, self.clock, conversation, channel, "follow_up", profile.id
        )
        handoff.note = step.handoff.reason
        self._exit(work, enrolment, "handed_off")
        work.outcome = "handed_off"
        return _PausePlan(conversation)

    def _goal_reached(
        self, sequence: SequenceDefinition, enrolment: Enrolment, events: list[Goal]
    ) -> bool:
        goals = sequence.exit_when.goal
        return any(
            goal.event == event.type
            and event.received_at >= enrolment.enrolled_at
            and matches(goal.where, event.properties)
            for event in events
            for goal in goals
        )

    def _capped_until(
        self,
        sequence: SequenceDefinition,
        sent: list[tuple[datetime, str | None]],
        now: datetime,
        own_key: str | None = None,
    ) -> datetime | None:
        """When another marketing message may go to this person under the frequency caps
        (the sequence's, else the business's, else 1 per 24 h and 3 per 7 days), counting
        every marketing message sent them on any channel (`sent`: when, and its send
        key); None if one may go now. A step run again after a crash does not count its
        own earlier send (`own_key`): that is the same message, which the door
        reconciles."""
        business = self.defaults.caps
        limits = (
            (timedelta(days=1), sequence.caps.per_24h or business.per_24h or DEFAULT_PER_24H),
            (timedelta(days=7), sequence.caps.per_7d or business.per_7d or DEFAULT_PER_7D),
        )
        free_at: datetime | None = None
        for window, limit in limits:
            recent = sorted(
                (
                    at
                    for at, key in sent
                    if at > now - window and (own_key is None or key != own_key)
                ),
                reverse=True,
            )[:limit]
            if len(recent) >= limit:
                # Free again when the oldest of the last `limit` texts leaves the window.
                at = recent[-1] + window + timedelta(minutes=1)
                free_at = at if free_at is None else max(free_at, at)
        return free_at

    async def _holds(
        self,
        session: AsyncSession,
        when: Condition,
        profile: Profile,
        enrolment: Enrolment,
        now: datetime,
        facts: Facts,
    ) -> bool:
        """Whether a branch condition holds for the person now."""
        match when:
            case RepliedCondition(replied=replied, within=within):
                since = now - within if within else enrolment.enrolled_at
                return facts.replied_since(profile.id, since) is replied
            case EventCondition(event=type_, where=where, within=within):
                since = now - within if within else enrolment.enrolled_at
                rows = await session.scalars(
                    select(Event.properties).where(
                        Event.profile_id == profile.id,
                        Event.type == type_,
                        Event.occurred_at >= since,
                    )
                )
                return any(matches(where, properties or {}) for properties in rows)
            case ScoreCondition(score=bounds):
                score = scoring.current_score(profile, self.directory.rules, now)
                return (
                    (bounds.gt is None or score > bounds.gt)
                    and (bounds.gte is None or score >= bounds.gte)
                    and (bounds.lt is None or score < bounds.lt)
                    and (bounds.lte is None or score <= bounds.lte)
                )
            case SegmentCondition(segment=name):
                segment = await segment_store.get(session, name)
                if segment is None:
                    return False
                return await segment_store.is_member(
                    session,
                    segment_store.rule_of(segment),
                    self.directory.rules.context(now),
                    profile.id,
                )

    def _finish(self, work: SequenceWork, outcome: str, detail: str | None = None) -> None:
        for name, value in self._finished(outcome, detail).items():
            setattr(work, name, value)

    def _finished(self, outcome: str, detail: str | None) -> dict[str, Any]:
        """A work row's fields once its step has run (its lease let go)."""
        return {
            "done_at": self.clock.now(), "outcome": outcome, "outcome_detail": detail,
            "lease_owner": None, "lease_until": None,
        }  # fmt: skip

    def _exit(
        self,
        work: SequenceWork,
        enrolment: Enrolment,
        reason: str,
        step_outcome: bool = False,
    ) -> None:
        self._finish(work, reason if step_outcome else "exited", reason)
        enrolment.status, enrolment.exit_reason = EXITED, reason
        enrolment.updated_at = self.clock.now()
        log.info(
            "sequence.exited", sequence=enrolment.sequence,
            profile_id=str(enrolment.profile_id), reason=reason,
        )  # fmt: skip

    def _advance(
        self,
        session: AsyncSession,
        enrolment: Enrolment,
        target: str,
        due: datetime,
        attempts: Attempts,
    ) -> None:
        fields, following = self._next(enrolment.id, target, due, attempts)
        for name, value in fields.items():
            setattr(enrolment, name, value)
        if following is not None:
            session.add(SequenceWork(**following))

    def _next(
        self, enrolment_id: uuid.UUID, target: str, due: datetime, attempts: Attempts
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Moving an enrolment on to `target` (a step, or the exit): the enrolment's new
        fields, and the work row of that step, due at `due` (none at the exit)."""
        now = self.clock.now()
        if target == EXIT:
            done = {"status": COMPLETED, "current_step": None, "exit_reason": "completed"}
            return {**done, "updated_at": now}, None
        following = {
            "enrolment_id": enrolment_id, "step": target, "due_at": due,
            "attempt": attempts.next(enrolment_id, target), "recorded": False,
        }  # fmt: skip
        return {"current_step": target, "updated_at": now}, following

    # -- sending, outside any transaction, then recording

    async def _send_all(self, plans: list[_SendPlan]) -> list[_Outcome]:
        """Send a batch's follow-ups: texts together through the door, web and voice
        follow-ups each on their own."""
        texts = [p for p in plans if p.channel is Channel.SMS]
        others = [p for p in plans if p.channel is not Channel.SMS]
        outcomes = list(await asyncio.gather(*(self._send_one(p) for p in others)))
        if texts:
            outcomes += await self._text_all(texts)
        return outcomes

    async def _text_all(self, plans: list[_SendPlan]) -> list[_Outcome]:
        """Record each text in its conversation, then send the recorded ones at once."""
        if self.door is None:
            return [_Outcome(p, "retry", "sms is not configured", retry=True) for p in plans]
        recorded = await self._record(plans)
        ready = [p for p, ok in zip(plans, recorded, strict=True) if ok]
        outcomes = [_not_recorded(p) for p, ok in zip(plans, recorded, strict=True) if not ok]
        results = await self.door.send_many([p.text for p in ready]) if ready else []
        return outcomes + [_result(p, r) for p, r in zip(ready, results, strict=True)]

    async def _send_one(self, plan: _SendPlan) -> _Outcome:
        """A web follow-up, or a call (which speaks the text and lets the person answer,
        in the same conversation)."""
        if plan.channel is Channel.WEB:
            return await self._push_to_web(plan)
        if self.calls is None:
            return _Outcome(plan, "retry", f"{plan.channel.value} is not configured", retry=True)
        if not (await self._record([plan]))[0]:
            return _not_recorded(plan)
        text = plan.text
        try:
            placed = await self.calls.call(
                OutboundCall(
                    to=text.to, say=text.body, purpose=text.purpose, send_key=text.send_key,
                    follow_up=text.follow_up,
                )
            )  # fmt: skip
        except SendRefused as refused:
            return _result(plan, refused)
        return _result(plan, placed)

    async def _push_to_web(self, plan: _SendPlan) -> _Outcome:
        """A web follow-up: put it in the person's web chat conversation, pushed to an
        open page (Rasa sends it to the web chat channel) or read at the next visit from
        the history. Kept as a message like a text; its key makes it go once."""
        if self.conversations is None:
            return _Outcome(
                plan,
                "retry",
                "Rasa's token is not set, so web follow-ups cannot be sent",
                retry=True,
            )
        text, follow_up = plan.text, plan.text.follow_up
        now = self.clock.now()
        async with self.sessions.begin() as session:
            if await session.scalar(select(Message.id).where(Message.send_key == text.send_key)):
                return _Outcome(plan, "sent", "already in the conversation")
            row = Message(
                profile_id=plan.profile_id,
                direction="outbound", channel="web", purpose=text.purpose.value,
                to_address=text.to, from_address="webchat", body=text.body, media={},
                status="queued", batch_id=uuid.uuid4(), part=1, parts=1,
                send_key=text.send_key, created_at=now, updated_at=now,
                enrolment_id=follow_up.enrolment_id if follow_up else None,
                sequence_step=follow_up.step if follow_up else None,
                variant=follow_up.variant if follow_up else None,
            )  # fmt: skip
            session.add(row)
        try:
            await self.conversations.record_follow_up(
                text.to, text.body, plan.asks,
                {"sequence_step": plan.step, "enrolment_id": str(plan.enrolment_id)},
                output_channel="webchat",
            )  # fmt: skip
            status, detail, retry = "sent", None, False
        except RasaUnavailable as error:
            status, detail, retry = "failed", f"Rasa could not take it: {error}", True
        async with self.sessions.begin() as session:
            stored = await session.get(Message, row.id)
            assert stored is not None
            stored.status, stored.error_message, stored.updated_at = status, detail, now
        return _Outcome(plan, "retry" if retry else "sent", detail or f"message {row.id}", retry)

    async def _pause(self, conversation: str) -> None:
        """Pause the bot where a person takes over; the open hand-off is what counts."""
        if self.conversations is None:
            return
        try:
            await self.conversations.append_events(conversation, [{"event": "pause"}])
        except RasaUnavailable as error:
            log.warning("sequence.handoff_not_paused", error=str(error))

    async def _record(self, plans: list[_SendPlan]) -> list[bool]:
        """Put each text in the person's conversation (an SMS or voice conversation is
        named by the phone number), the whole batch in one request; for each, whether
        it is there (a retry after an unknown outcome is there already)."""
        wanted = [p for p in plans if p.record]
        if self.conversations is None or not wanted:
            return [True] * len(plans)
        try:
            failed = await self.conversations.record_follow_ups(
                [
                    FollowUpRecord(
                        p.text.to, p.text.body, p.asks,
                        {"sequence_step": p.step, "enrolment_id": str(p.enrolment_id)},
                    )
                    for p in wanted
                ]
            )  # fmt: skip
        except RasaUnavailable as error:
            failed = {p.text.to: str(error) for p in wanted}
        for conversation, why in failed.items():
            log.warning(
                "sequence.not_recorded", to=redact(IdentityKind.SMS, conversation), error=why
            )
        return [not p.record or p.text.to not in failed for p in plans]

    async def _record_outcomes(self, outcomes: list[_Outcome]) -> None:
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
        result: _Outcome,
        status: str,
        variants: dict[str, str | None],
        attempts: Attempts,
        now: datetime,
    ) -> None:
        plan, outcome = result.plan, result.outcome
        # The row keeps the send key it used (derived until now, see `_decide`).
        finished = {"id": plan.work_id, "send_key": plan.text.send_key}
        enrolment: dict[str, Any] = {}
        if plan.new_variant and plan.text.follow_up is not None:
            enrolment["variants"] = {**variants, plan.step: plan.text.follow_up.variant}
        if result.retry and plan.attempt < self.max_attempts:
            if enrolment:
                changes.enrolments.append({"id": plan.enrolment_id, **enrolment})
            changes.work.append({**finished, **self._finished("retry", result.detail)})
            backoff = self.retry_after * 2 ** (plan.attempt - 1)
            changes.new_work.append(
                {
                    "enrolment_id": plan.enrolment_id, "step": plan.step,
                    "due_at": now + backoff, "attempt": attempts.next(plan.enrolment_id, plan.step),
                    "send_key": plan.text.send_key if result.same_key else None,
                    "recorded": result.in_conversation,
                }
            )  # fmt: skip
            return
        if result.retry:
            outcome = "failed"
        changes.work.append({**finished, **self._finished(outcome, result.detail)})
        if status == ACTIVE:
            sequence = self.sequences[plan.sequence]
            index = next(i for i, s in enumerate(sequence.steps) if s.id == plan.step)
            target = sequence.successors(index)[0]
            fields, following = self._next(plan.enrolment_id, target, now, attempts)
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


async def _locked(
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


def _not_recorded(plan: _SendPlan) -> _Outcome:
    return _Outcome(plan, "retry", "Rasa could not record it in the conversation", retry=True)


def _result(plan: _SendPlan, result: Sent | Placed | SendRefused) -> _Outcome:
    """A door's answer as a step outcome (the door is asked once the text is in the
    person's conversation)."""
    if isinstance(result, SendRefused):
        if result.kind in CONSENT_KINDS:
            return _Outcome(plan, "skipped_consent", str(result))
        if result.kind in IN_DOUBT_KINDS | NOT_SENT_KINDS:
            detail = f"{result.kind}: {result}"
            return _Outcome(
                plan, "retry", detail, retry=True, same_key=result.kind in IN_DOUBT_KINDS,
                in_conversation=True,
            )  # fmt: skip
        return _Outcome(plan, "failed", f"{result.kind}: {result}")
    first = result.messages[0]
    if first.status == "failed":
        return _Outcome(plan, "failed", f"message {first.id}: {first.error_message}")
    return _Outcome(
        plan, "sent", f"message {first.id}" + (" (repeated)" if result.repeated else "")
    )
