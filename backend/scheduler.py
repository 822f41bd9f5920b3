"""The scheduler: runs the steps of follow-up sequences when they fall due.

Due work lives in the `sequence_work` table, one row per step visit. A worker claims due
rows with a lease (`SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL; on SQLite one
claimer at a time in the process, and every claim is a conditional update, so a row
leased by someone else is never taken), runs each step, records its outcome, and
schedules the next step. A killed worker's lease expires and its rows are claimed again;
a send is keyed by (enrolment, step, attempt), so running a step again never texts twice
through the one door (backend.outbound).

Guards are checked at the moment of sending: the global pause, quiet hours in the
person's time zone (the send moves to the next allowed minute), consent, and the
frequency cap on marketing texts. docs/sequences.md ("How sequences run") says what
runs and what is not built yet (handoff steps, web and voice, add_points, recording in
the Rasa conversation, results).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend import consent, scoring, segment_store
from backend.clock import Clock
from backend.consent import Channel, Purpose
from backend.enrolment import ACTIVE, COMPLETED, EXITED, matches, next_attempt
from backend.identities import IdentityKind, redact
from backend.logs import get_logger
from backend.models import Enrolment, Event, Identity, Message, Profile, SequenceWork
from backend.outbound import FollowUp, MessagePurpose, OutboundText, SendRefused, SmsDoor
from backend.profiles import ProfileDirectory
from backend.rasa_client import RasaClient, RasaUnavailable
from backend.sequences import (
    DEFAULT_PER_7D,
    DEFAULT_PER_24H,
    DEFAULT_QUIET_FROM,
    DEFAULT_QUIET_UNTIL,
    EXIT,
    BranchStep,
    Condition,
    EventCondition,
    RepliedCondition,
    ScoreCondition,
    SegmentCondition,
    SendChannel,
    SendStep,
    SequenceDefinition,
    UpdateStep,
    WaitStep,
    WaitUntil,
    Weekday,
    render,
    template_context,
)

log = get_logger(__name__)

WEEKDAYS = list(Weekday)
# Consent refusals: the person does not want this text; never retried.
CONSENT_KINDS = frozenset({"consent-refused", "recipient-unsubscribed"})
# The text may or may not have reached Twilio: try again later with the same send key,
# so the door looks it up before sending.
IN_DOUBT_KINDS = frozenset({"twilio-unavailable", "send-in-progress"})
# The text was not sent (the number's pace was full): try again later, as a new send.
NOT_SENT_KINDS = frozenset({"sender-busy"})


# ---------------------------------------------------------------------------- time


def zone_for(profile_timezone: str | None, phone: str | None, business_timezone: str) -> ZoneInfo:
    """The person's time zone: their profile's, else their phone number's country (or
    area), else the business's."""
    if profile_timezone:
        try:
            return ZoneInfo(profile_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if phone:
        try:
            zones = phone_timezones.time_zones_for_number(phonenumbers.parse(phone))
        except phonenumbers.NumberParseException:
            zones = ()
        known = [z for z in zones if z != "Etc/Unknown"]
        if known:
            try:
                return ZoneInfo(known[0])
            except (ZoneInfoNotFoundError, ValueError):
                pass
    try:
        return ZoneInfo(business_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _at(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """`moment` on `day` in `zone`, in UTC (a time skipped by a DST change is read with
    the offset before the change, i.e. an hour later on the clock)."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def wait_until(now: datetime, plan: WaitUntil, zone: ZoneInfo) -> datetime:
    """When a wait that starts `now` ends: at least `for`, then the next `until` time of
    day in `zone` on one of the days `on`."""
    earliest = now + (plan.for_ or timedelta())
    if plan.until is None:
        return earliest
    day = earliest.astimezone(zone).date()
    for offset in range(9):
        candidate_day = day + timedelta(days=offset)
        if plan.on and WEEKDAYS[candidate_day.weekday()] not in plan.on:
            continue
        candidate = _at(candidate_day, plan.until, zone)
        # "Until 10:00" at 10:00 means tomorrow's; "for 1d, until 10:00" may end on it.
        if candidate > earliest or (plan.for_ and candidate == earliest):
            return candidate
    raise AssertionError("a weekday comes round within nine days")  # pragma: no cover


def quiet_until(now: datetime, start: time, end: time, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet hours `now` falls in, in UTC; None outside them."""
    local = now.astimezone(zone)
    moment = local.time().replace(tzinfo=None)
    overnight = start > end
    quiet = (moment >= start or moment < end) if overnight else (start <= moment < end)
    if not quiet:
        return None
    day = local.date() + timedelta(days=1) if overnight and moment >= start else local.date()
    return _at(day, end, zone)


def roll_for(profile_id: uuid.UUID, sequence: str, step: str) -> float:
    """A number in [0, 1), the same for one person and step every time."""
    digest = hashlib.sha256(f"{profile_id}:{sequence}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --------------------------------------------------------------------------- claims

_SQLITE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _sqlite_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _SQLITE_LOCKS.get(loop)
    if lock is None:
        lock = _SQLITE_LOCKS[loop] = asyncio.Lock()
    return lock


async def claim(
    session: AsyncSession, now: datetime, owner: str, limit: int, lease: timedelta
) -> list[int]:
    """Lease up to `limit` due rows (not done, not leased or lease expired) to `owner`;
    their ids, earliest due first. Call inside a transaction."""
    free = or_(SequenceWork.lease_until.is_(None), SequenceWork.lease_until <= now)
    query = (
        select(SequenceWork.id)
        .where(SequenceWork.done_at.is_(None), SequenceWork.due_at <= now, free)
        .order_by(SequenceWork.due_at, SequenceWork.id)
        .limit(limit)
    )
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        query = query.with_for_update(skip_locked=True)
    ids = list(await session.scalars(query))
    if not ids:
        return []
    if postgres:
        await session.execute(
            update(SequenceWork)
            .where(SequenceWork.id.in_(ids))
            .values(lease_owner=owner, lease_until=now + lease)
        )
        return ids
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


# ---------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class _SendPlan:
    work_id: int
    enrolment_id: uuid.UUID
    step: str
    attempt: int
    text: OutboundText
    asks: str | None
    # False when retrying a send whose outcome was unknown: it is in the conversation.
    record: bool = True


@dataclass
class Worker:
    """Claims due sequence work and runs it. `tick()` runs one round; `run()` loops."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    sequences: Mapping[str, SequenceDefinition]
    directory: ProfileDirectory
    door: SmsDoor | None
    business: Mapping[str, Any]
    # Rasa's HTTP API, to record each follow-up in the person's conversation before it
    # is sent; None when Rasa's token is not set (the texts then go unrecorded).
    conversations: RasaClient | None = None
    owner: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    batch: int = 100
    lease: timedelta = timedelta(seconds=60)
    poll_seconds: float = 1.0
    max_attempts: int = 5
    retry_after: timedelta = timedelta(seconds=60)
    paused: bool = False

    @property
    def business_timezone(self) -> str:
        return str(self.business.get("timezone") or "UTC")

    async def run(self, stop: asyncio.Event) -> None:
        """Tick until `stop` is set; a round that finds work looks again at once."""
        while not stop.is_set():
            try:
                done = await self.tick()
            except Exception:  # one bad round must not stop the scheduler
                log.exception("scheduler.tick_failed", owner=self.owner)
                done = 0
            if done:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)

    async def tick(self) -> int:
        """Claim due work and run it; how many rows were run."""
        if self.paused:
            return 0
        ids = await self.claim()
        for work_id in ids:
            await self.run_step(work_id)
        return len(ids)

    async def claim(self) -> list[int]:
        now = self.clock.now()
        bind = self.sessions.kw.get("bind")
        if bind is not None and bind.dialect.name == "sqlite":
            # SQLite has one writer: one claimer at a time in this process.
            async with _sqlite_lock(), self.sessions.begin() as session:
                return await claim(session, now, self.owner, self.batch, self.lease)
        async with self.sessions.begin() as session:
            return await claim(session, now, self.owner, self.batch, self.lease)

    async def run_step(self, work_id: int) -> None:
        """Run one claimed row (nothing if it is done or leased to someone else)."""
        async with self.sessions.begin() as session:
            plan = await self._decide(session, work_id)
        if plan is not None:
            await self._send(plan)

    # -- deciding, in one transaction

    async def _decide(self, session: AsyncSession, work_id: int) -> _SendPlan | None:
        now = self.clock.now()
        work = await session.get(SequenceWork, work_id, with_for_update=True)
        if work is None or work.done_at is not None or work.lease_owner != self.owner:
            return None
        enrolment = await session.get(Enrolment, work.enrolment_id, with_for_update=True)
        assert enrolment is not None
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
        profile = await self.directory.resolve(session, enrolment.profile_id)
        if profile is None:
            self._exit(work, enrolment, "profile_gone")
            return None
        if (
            await consent.state(session, profile.id, Channel.SMS, Purpose.MARKETING)
            is consent.State.WITHDRAWN
        ):
            self._exit(work, enrolment, "opted_out")
            return None
        if sequence.exit_when.replied and await self._replied(
            session, profile.id, enrolment.enrolled_at
        ):
            self._exit(work, enrolment, "replied")
            return None
        if await self._goal_reached(session, sequence, enrolment, profile.id):
            self._exit(work, enrolment, "goal_reached")
            return None
        index = next((i for i, s in enumerate(sequence.steps) if s.id == work.step), None)
        if index is None:
            self._exit(work, enrolment, "step_removed")
            return None
        step = sequence.steps[index]
        phone = await self._phone(session, profile)
        zone = zone_for(profile.timezone, phone, self.business_timezone)
        following = sequence.successors(index)[0]

        if isinstance(step, WaitStep):
            self._finish(work, "waited")
            await self._advance(session, enrolment, following, wait_until(now, step.plan, zone))
            return None
        if isinstance(step, UpdateStep):
            await self.directory.update(session, profile, {}, step.update.set_)
            detail = "add_points is not applied yet" if step.update.add_points is not None else None
            self._finish(work, "updated", detail)
            await self._advance(session, enrolment, following, now)
            return None
        if isinstance(step, BranchStep):
            target = sequence.successors(index)[-1]  # otherwise, or the next step
            for case in step.branch:
                if await self._holds(session, case.when, profile, enrolment, now):
                    target = case.goto
                    break
            self._finish(work, "branched", f"to {target}")
            await self._advance(session, enrolment, target, now)
            return None
        if not isinstance(step, SendStep):
            # handoff steps are not built yet (docs/sequences.md).
            self._exit(work, enrolment, "not_supported_yet", step_outcome=True)
            return None

        message = step.send
        if message.channel not in (SendChannel.SMS, SendChannel.BEST):
            self._exit(work, enrolment, "not_supported_yet", step_outcome=True)
            return None
        marketing = message.purpose is Purpose.MARKETING
        if marketing:
            quiet = sequence.quiet_hours
            start, end = (
                (quiet.start, quiet.end) if quiet else (DEFAULT_QUIET_FROM, DEFAULT_QUIET_UNTIL)
            )
            later = quiet_until(now, start, end, zone)
            if later is not None:
                work.due_at, work.lease_owner, work.lease_until = later, None, None
                work.outcome, work.outcome_detail = "rescheduled", "quiet hours"
                return None
        if not await consent.may_send(session, profile.id, Channel.SMS, message.purpose):
            self._finish(work, "skipped_consent")
            await self._advance(session, enrolment, following, now)
            return None
        if step.id in enrolment.variants:
            chosen = enrolment.variants[step.id]
        else:
            variant = message.variant_for(roll_for(profile.id, sequence.name, step.id))
            chosen = variant.name if variant else None
            enrolment.variants = {**enrolment.variants, step.id: chosen}
        if chosen is None:
            self._finish(work, "held_out")
            await self._advance(session, enrolment, following, now)
            return None
        if marketing:
            capped_until = await self._capped_until(session, sequence, profile.id, now)
            if capped_until is not None:
                work.due_at, work.lease_owner, work.lease_until = capped_until, None, None
                work.outcome, work.outcome_detail = "rescheduled", "frequency cap"
                return None
        if phone is None:
            self._finish(work, "failed", "no phone number to text")
            await self._advance(session, enrolment, following, now)
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
            await self._advance(session, enrolment, following, now)
            return None
        purpose = MessagePurpose.MARKETING if marketing else MessagePurpose.TRANSACTIONAL
        first_try = work.send_key is None
        key = work.send_key = work.send_key or f"seq:{enrolment.id}:{step.id}:{work.attempt}"
        return _SendPlan(
            work.id, enrolment.id, step.id, work.attempt,
            OutboundText(
                to=phone, body=body, purpose=purpose, send_key=key,
                follow_up=FollowUp(enrolment.id, step.id, chosen),
            ),
            message.asks, record=first_try,
        )  # fmt: skip

    async def _goal_reached(
        self,
        session: AsyncSession,
        sequence: SequenceDefinition,
        enrolment: Enrolment,
        profile_id: uuid.UUID,
    ) -> bool:
        goals = sequence.exit_when.goal
        if not goals:
            return False
        rows = await session.execute(
            select(Event.type, Event.properties).where(
                Event.profile_id == profile_id,
                Event.type.in_([g.event for g in goals]),
                Event.received_at >= enrolment.enrolled_at,
            )
        )
        return any(
            goal.event == type_ and matches(goal.where, properties or {})
            for type_, properties in rows
            for goal in goals
        )

    async def _capped_until(
        self,
        session: AsyncSession,
        sequence: SequenceDefinition,
        profile_id: uuid.UUID,
        now: datetime,
    ) -> datetime | None:
        """When another marketing text may go to this person under the frequency caps
        (the sequence's, else 1 per 24 h and 3 per 7 days), counting every marketing text
        the door sent them; None if one may go now."""
        limits = (
            (timedelta(days=1), sequence.caps.per_24h or DEFAULT_PER_24H),
            (timedelta(days=7), sequence.caps.per_7d or DEFAULT_PER_7D),
        )
        free_at: datetime | None = None
        for window, limit in limits:
            recent = list(
                await session.scalars(
                    select(Message.created_at)
                    .where(
                        Message.profile_id == profile_id,
                        Message.direction == "outbound",
                        Message.purpose == MessagePurpose.MARKETING.value,
                        Message.part == 1,
                        Message.status != "failed",
                        Message.created_at > now - window,
                    )
                    .order_by(Message.created_at.desc())
                    .limit(limit)
                )
            )
            if len(recent) >= limit:
                # Free again when the oldest of the last `limit` texts leaves the window.
                at = recent[-1] + window + timedelta(minutes=1)
                free_at = at if free_at is None else max(free_at, at)
        return free_at

    async def _replied(self, session: AsyncSession, profile_id: uuid.UUID, since: datetime) -> bool:
        """Did the person text us since `since`? (Keyword texts, STOP and the like, are
        not replies.)"""
        found = await session.scalar(
            select(Message.id)
            .where(
                Message.profile_id == profile_id,
                Message.direction == "inbound",
                Message.keyword.is_(None),
                Message.created_at >= since,
            )
            .limit(1)
        )
        return found is not None

    async def _holds(
        self,
        session: AsyncSession,
        when: Condition,
        profile: Profile,
        enrolment: Enrolment,
        now: datetime,
    ) -> bool:
        """Whether a branch condition holds for the person now."""
        match when:
            case RepliedCondition(replied=replied, within=within):
                since = now - within if within else enrolment.enrolled_at
                return await self._replied(session, profile.id, since) is replied
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

    async def _phone(self, session: AsyncSession, profile: Profile) -> str | None:
        """The number texts go to: the profile's SMS identity (the door finds people by
        it), else its phone field."""
        address = await session.scalar(
            select(Identity.address)
            .where(Identity.profile_id == profile.id, Identity.kind == IdentityKind.SMS.value)
            .order_by(Identity.created_at)
            .limit(1)
        )
        return address or profile.phone

    def _finish(self, work: SequenceWork, outcome: str, detail: str | None = None) -> None:
        work.done_at = self.clock.now()
        work.outcome, work.outcome_detail = outcome, detail
        work.lease_owner, work.lease_until = None, None

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

    async def _advance(
        self, session: AsyncSession, enrolment: Enrolment, target: str, due: datetime
    ) -> None:
        enrolment.updated_at = self.clock.now()
        if target == EXIT:
            enrolment.status, enrolment.current_step = COMPLETED, None
            enrolment.exit_reason = "completed"
            return
        enrolment.current_step = target
        session.add(
            SequenceWork(
                enrolment_id=enrolment.id,
                step=target,
                due_at=due,
                attempt=await next_attempt(session, enrolment.id, target),
            )
        )

    # -- sending, outside any transaction, then recording

    async def _record(self, plan: _SendPlan) -> bool:
        """Put the text in the person's conversation (an SMS conversation is named by
        the phone number); False if Rasa could not take it."""
        if self.conversations is None or not plan.record:
            return True
        try:
            await self.conversations.record_follow_up(
                plan.text.to, plan.text.body, plan.asks, self.clock.now(),
                {"sequence_step": plan.step, "enrolment_id": str(plan.enrolment_id)},
            )  # fmt: skip
        except RasaUnavailable as error:
            log.warning("sequence.not_recorded", step=plan.step, error=str(error))
            return False
        return True

    async def _send(self, plan: _SendPlan) -> None:
        outcome, detail, retry, same_key = "sent", None, False, False
        if self.door is None:
            outcome, detail, retry = "retry", "SMS is not configured", True
        elif not await self._record(plan):
            outcome, detail, retry = "retry", "Rasa could not record it in the conversation", True
        else:
            try:
                sent = await self.door.send(plan.text)
                first = sent.messages[0]
                detail = f"message {first.id}" + (" (repeated)" if sent.repeated else "")
                if first.status == "failed":
                    outcome, detail = "failed", f"message {first.id}: {first.error_message}"
            except SendRefused as refused:
                if refused.kind in CONSENT_KINDS:
                    outcome, detail = "skipped_consent", str(refused)
                elif refused.kind in IN_DOUBT_KINDS | NOT_SENT_KINDS:
                    outcome, detail, retry = "retry", f"{refused.kind}: {refused}", True
                    same_key = refused.kind in IN_DOUBT_KINDS
                else:
                    outcome, detail = "failed", f"{refused.kind}: {refused}"
        now = self.clock.now()
        async with self.sessions.begin() as session:
            work = await session.get(SequenceWork, plan.work_id, with_for_update=True)
            enrolment = await session.get(Enrolment, plan.enrolment_id, with_for_update=True)
            assert work is not None and enrolment is not None
            if work.done_at is not None:
                return  # another worker finished it (its lease had expired)
            sequence = self.sequences[enrolment.sequence]
            index = next(i for i, s in enumerate(sequence.steps) if s.id == plan.step)
            if retry and plan.attempt < self.max_attempts:
                self._finish(work, "retry", detail)
                backoff = self.retry_after * 2 ** (plan.attempt - 1)
                session.add(
                    SequenceWork(
                        enrolment_id=enrolment.id, step=plan.step,
                        due_at=now + backoff, attempt=plan.attempt + 1,
                        send_key=plan.text.send_key if same_key else None,
                    )
                )  # fmt: skip
                return
            if retry:
                outcome = "failed"
            self._finish(work, outcome, detail)
            if enrolment.status == ACTIVE:
                await self._advance(session, enrolment, sequence.successors(index)[0], now)
        log.info(
            "sequence.step", sequence=enrolment.sequence, step=plan.step,
            profile_id=str(enrolment.profile_id), outcome=outcome,
            to=redact(IdentityKind.SMS, plan.text.to),
        )  # fmt: skip
