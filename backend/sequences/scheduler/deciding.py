"""Deciding due steps, in one transaction per batch: whether the person is still in the
sequence, what the step does (wait, update, branch, hand off), and for a send whether it
may go now (quiet hours in the person's time zone, consent on the channel, the frequency
caps, an A/B hold-out) and what it says. A send is planned here and sent outside the
transaction (`sending`); everything else is done here."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger as consent
from backend.consent.ledger import Channel, Purpose, State
from backend.core import audit
from backend.core.clock import Clock
from backend.core.identities import IdentityKind
from backend.core.models import Enrolment, Event, Profile, SequenceWork
from backend.handoffs import handoff as handoffs
from backend.messaging.door import FollowUp, MessagePurpose, NotNow
from backend.messaging.guards import ContactRules, hold_for, zone_for
from backend.messaging.sms_door import OutboundText
from backend.people.profiles import ProfileDirectory
from backend.scoring import rules as scoring
from backend.segments import store as segment_store
from backend.sequences.definition import (
    BranchStep,
    Condition,
    EventCondition,
    HandoffStep,
    RepliedCondition,
    ScoreCondition,
    SegmentCondition,
    SendChannel,
    SendStep,
    SequenceDefinition,
    Step,
    StepMessage,
    UpdateStep,
    WaitStep,
)
from backend.sequences.enrolment import ACTIVE, EXITED, matches
from backend.sequences.scheduler import claiming, progress
from backend.sequences.scheduler.facts import Facts, Goal, address_of, load_facts
from backend.sequences.scheduler.plans import PausePlan, SendPlan
from backend.sequences.scheduler.timing import roll_for, wait_until
from backend.sequences.templates import RenderedEmail, render, render_email, template_context


class RecordsPoints(Protocol):
    """Records a step's points as an event on the person, in the caller's transaction
    (events.recording.EventRecorder.record_points: recording an event may enrol, so
    `events` sits above `sequences` and the worker is handed the function)."""

    async def __call__(
        self, session: AsyncSession, profile_id: uuid.UUID, properties: dict[str, Any]
    ) -> None: ...


@dataclass(frozen=True)
class Visit:
    """One due step of one person, with what deciding it needs."""

    work: SequenceWork
    enrolment: Enrolment
    sequence: SequenceDefinition
    index: int  # the step's place in the sequence
    step: Step
    profile: Profile
    phone: str | None
    zone: ZoneInfo
    following: str  # the step that comes next (or the exit)
    facts: Facts
    now: datetime


@dataclass(frozen=True)
class Decider:
    clock: Clock
    sequences: Mapping[str, SequenceDefinition]
    directory: ProfileDirectory
    business: Mapping[str, Any]
    record_points: RecordsPoints
    rules: ContactRules
    owner: str

    @property
    def business_timezone(self) -> str:
        return str(self.business.get("timezone") or "UTC")

    async def decide_all(
        self, session: AsyncSession, work_ids: Sequence[int]
    ) -> list[SendPlan | PausePlan]:
        """Decide the claimed rows still leased to this worker; the sends and pauses to
        make once the transaction is committed."""
        now = self.clock.now()
        mine = [
            (work, enrolment)
            for work, enrolment in await claiming.locked(session, work_ids)
            if work.done_at is None and work.lease_owner == self.owner
        ]
        if not mine:
            return []
        facts = await load_facts(session, self.directory, [e for _, e in mine], self.sequences, now)
        plans: list[SendPlan | PausePlan] = []
        for work, enrolment in mine:
            plan = await self.decide(session, work, enrolment, facts, now)
            if plan is not None:
                plans.append(plan)
        return plans

    async def decide(
        self,
        session: AsyncSession,
        work: SequenceWork,
        enrolment: Enrolment,
        facts: Facts,
        now: datetime,
    ) -> SendPlan | PausePlan | None:
        visit = self._visit(work, enrolment, facts, now)
        if visit is None:
            return None
        step = visit.step
        if isinstance(step, SendStep):
            return await self._plan_send(session, visit, step)
        if isinstance(step, HandoffStep):
            return await self._hand_off(session, visit, step)
        await self._run(session, visit, step)
        return None

    def _visit(
        self, work: SequenceWork, enrolment: Enrolment, facts: Facts, now: datetime
    ) -> Visit | None:
        """The step to decide, or None when the person leaves the sequence here (or has
        left it already)."""
        if enrolment.status != ACTIVE:
            progress.finish(work, self.clock.now(), "enrolment_ended", enrolment.exit_reason)
            return None
        sequence = self.sequences.get(enrolment.sequence)
        profile = facts.profiles.get(enrolment.profile_id)
        reason: str | None = None
        if sequence is None:
            reason = "sequence_removed"
        elif sequence.paused:
            reason = "paused"
        elif profile is None:
            reason = "profile_gone"
        elif facts.consent_state(profile.id, Channel.SMS, Purpose.MARKETING) is State.WITHDRAWN:
            reason = "opted_out"
        elif sequence.exit_when.replied and facts.replied_since(profile.id, enrolment.enrolled_at):
            reason = "replied"
        elif self._goal_reached(sequence, enrolment, facts.goals.get(profile.id, [])):
            reason = "goal_reached"
        index = None
        if reason is None and sequence is not None:
            index = next((i for i, s in enumerate(sequence.steps) if s.id == work.step), None)
            if index is None:
                reason = "step_removed"
        if reason is not None:
            progress.exit_sequence(work, enrolment, self.clock.now(), reason)
            return None
        assert sequence is not None and profile is not None and index is not None
        phone = address_of(profile, IdentityKind.SMS) or profile.phone
        return Visit(
            work, enrolment, sequence, index, sequence.steps[index], profile, phone,
            zone_for(profile.timezone, phone, self.business_timezone),
            sequence.successors(index)[0], facts, now,
        )  # fmt: skip

    async def _run(
        self, session: AsyncSession, visit: Visit, step: WaitStep | UpdateStep | BranchStep
    ) -> None:
        """A step that sends nothing: wait, update the profile, or branch."""
        work, enrolment, now = visit.work, visit.enrolment, visit.now
        attempts = visit.facts.attempts
        if isinstance(step, WaitStep):
            progress.finish(work, self.clock.now(), "waited")
            due = wait_until(now, step.plan, visit.zone)
            progress.advance(session, enrolment, self.clock.now(), visit.following, due, attempts)
            return
        if isinstance(step, UpdateStep):
            await self.directory.update(session, visit.profile, {}, step.update.set_)
            if points := step.update.add_points:
                properties = {"sequence": visit.sequence.name, "step": step.id, "points": points}
                # Recorded as an event, so the points decay and survive a rebuild.
                await self.record_points(session, visit.profile.id, properties)
            progress.finish(work, self.clock.now(), "updated")
            progress.advance(session, enrolment, self.clock.now(), visit.following, now, attempts)
            return
        target = visit.sequence.successors(visit.index)[-1]  # otherwise, or the next step
        for case in step.branch:
            if await self._holds(session, case.when, visit):
                target = case.goto
                break
        progress.finish(work, self.clock.now(), "branched", f"to {target}")
        progress.advance(session, enrolment, self.clock.now(), target, now, attempts)

    async def _plan_send(
        self, session: AsyncSession, visit: Visit, step: SendStep
    ) -> SendPlan | None:
        """A send that may go now, or None: held for quiet hours or the caps (the row
        is due again then), skipped for consent, held out, or failed."""
        work, enrolment, profile, now = visit.work, visit.enrolment, visit.profile, visit.now
        message = step.send
        marketing = message.purpose is Purpose.MARKETING
        route = self._route(message, profile, visit.phone, visit.facts)
        if route is None:
            self._skip(session, visit, "skipped_consent")
            return None
        channel, to = route
        # The variant is kept on the enrolment with the send's outcome (one write fewer
        # here); until then it is the same roll again.
        new_variant = step.id not in enrolment.variants
        if new_variant:
            variant = message.variant_for(roll_for(profile.id, visit.sequence.name, step.id))
            chosen = variant.name if variant else None
        else:
            chosen = enrolment.variants[step.id]
        if chosen is None:
            enrolment.variants = {**enrolment.variants, step.id: None}
            self._skip(session, visit, "held_out")
            return None
        # A row's own send key is derived, not stored (one write fewer): only a retry
        # after an unknown outcome stores a key, the earlier row's.
        own_key = f"seq:{enrolment.id}:{step.id}:{work.attempt}"
        key = work.send_key or own_key
        limits = self.rules.limits(visit.sequence.caps, visit.sequence.quiet_hours)
        if marketing:
            # The doors' guards, asked before the text is put in the conversation; the
            # door asks again as it sends. A step run again after a crash does not
            # count its own earlier send: that is the same message, which the door
            # reconciles.
            sent = [at for at, k in visit.facts.marketing.get(profile.id, []) if k != key]
            hold = hold_for(now, visit.zone, sent, limits)
            if hold is not None:
                self._hold(work, hold.reason.value.replace("-", " "), hold.until)
                return None
        if to is None:
            self._skip(session, visit, "failed", f"no {channel.value} address to send to")
            return None
        variant = next(v for v in message.choices if v.name == chosen)
        email: RenderedEmail | None = None
        try:
            if channel is Channel.EMAIL:
                subject = message.subject_of(variant)
                assert subject is not None  # the file's model sees to it
                email = render_email(
                    subject, variant.template, self._context(visit), marketing,
                    html=message.channel is SendChannel.EMAIL,
                )  # fmt: skip
                body = email.text
            else:
                body = render(variant.template, self._context(visit))
        except Exception as error:  # a marketer's template failing on this person
            self._skip(session, visit, "failed", f"the template failed: {error}")
            return None
        purpose = MessagePurpose.MARKETING if marketing else MessagePurpose.TRANSACTIONAL
        if marketing:
            visit.facts.note_marketing(profile.id, now, key)
        return SendPlan(
            work.id, enrolment.id, visit.sequence.name, enrolment.profile_id, step.id,
            work.attempt,
            OutboundText(
                to=to, body=body, purpose=purpose, send_key=key,
                follow_up=FollowUp(enrolment.id, step.id, chosen),
                limits=limits, if_not_now=NotNow.REFUSE,
            ),
            message.asks, channel, record=key == own_key and not work.recorded,
            new_variant=new_variant, email=email,
        )  # fmt: skip

    @staticmethod
    def _hold(work: SequenceWork, why: str, until: datetime) -> None:
        """Put the step off until `until` (its lease let go)."""
        work.due_at, work.lease_owner, work.lease_until = until, None, None
        work.outcome, work.outcome_detail = "rescheduled", why

    def _skip(
        self, session: AsyncSession, visit: Visit, outcome: str, detail: str | None = None
    ) -> None:
        """The send does not happen; the person moves on to the next step."""
        progress.finish(visit.work, self.clock.now(), outcome, detail)
        progress.advance(
            session, visit.enrolment, self.clock.now(), visit.following, visit.now,
            visit.facts.attempts,
        )  # fmt: skip

    def _context(self, visit: Visit) -> dict[str, Any]:
        profile, enrolment = visit.profile, visit.enrolment
        return template_context(
            {
                **{name: getattr(profile, name) for name in ("first_name", "last_name",
                                                             "email", "company", "timezone")},
                "phone": profile.phone or visit.phone,
                "attributes": profile.attributes,
                "score": scoring.current_score(profile, self.directory.rules, visit.now),
            },
            {"type": enrolment.trigger_type, "properties": enrolment.trigger_properties},
            self.business,
        )  # fmt: skip

    def _route(
        self, message: StepMessage, profile: Profile, phone: str | None, facts: Facts
    ) -> tuple[Channel, str | None] | None:
        """The channel and address a follow-up goes by, if consent allows it now: the
        step's channel, or for `best` the reachable channel the person most recently
        agreed to, e-mail only when the step has a subject (for transactional messages
        with no agreement on record: SMS, then web, then e-mail)."""
        wanted, purpose = message.channel, message.purpose
        addresses = {
            Channel.SMS: phone,
            Channel.WEB: address_of(profile, IdentityKind.WEB),
            Channel.VOICE: phone,
            Channel.EMAIL: address_of(profile, IdentityKind.EMAIL) or profile.email,
        }
        if wanted is not SendChannel.BEST:
            channel = Channel(wanted.value)
            if not facts.may_send(profile.id, channel, purpose):
                return None
            return channel, addresses[channel]
        if not message.may_email:
            del addresses[Channel.EMAIL]
        known = facts.consents.get(profile.id, {})
        newest_first = sorted(
            ((c, state, since) for (c, p), (state, since) in known.items() if p is purpose),
            key=lambda item: item[2],
            reverse=True,
        )
        states = {c: state for c, state, _ in newest_first if c in addresses}
        agreed = [c for c, state in states.items() if state is State.GRANTED]
        fallback = (
            []
            if purpose is Purpose.MARKETING
            else [c for c in (Channel.SMS, Channel.WEB, Channel.EMAIL) if c in addresses]
        )
        for channel in [*agreed, *fallback]:
            allowed = consent.allows(states.get(channel, State.NONE), purpose)
            if allowed and addresses[channel] is not None:
                return channel, addresses[channel]
        return None

    async def _hand_off(
        self, session: AsyncSession, visit: Visit, step: HandoffStep
    ) -> PausePlan | None:
        """Open a hand-off on the person's conversation (their texts, else their web
        chat) with the step's words for the agent; the sequence ends for them."""
        work, enrolment, profile = visit.work, visit.enrolment, visit.profile
        web = address_of(profile, IdentityKind.WEB)
        conversation, channel = (visit.phone, "sms") if visit.phone else (web, "web")
        if conversation is None:
            progress.finish(work, self.clock.now(), "failed", "no conversation to hand off")
            enrolment.status, enrolment.exit_reason = EXITED, "handed_off"
            return None
        handoff, _ = await handoffs.open_handoff(
            session, self.clock, audit.SCHEDULER, conversation, channel, "follow_up", profile.id
        )
        handoff.note = step.handoff.reason
        progress.exit_sequence(work, enrolment, self.clock.now(), "handed_off")
        work.outcome = "handed_off"
        return PausePlan(conversation)

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

    async def _holds(self, session: AsyncSession, when: Condition, visit: Visit) -> bool:
        """Whether a branch condition holds for the person now."""
        profile, enrolment, now, facts = visit.profile, visit.enrolment, visit.now, visit.facts
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
