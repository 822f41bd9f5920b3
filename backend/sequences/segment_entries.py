"""Segment entry: enrolling people who come to match a segment into the sequences whose
trigger is `segment_entered: <segment>`.

Membership is a rule evaluated in SQL (backend.segments.rules). It changes with events,
profile and consent changes, merges, and with time alone (`within_days`, score decay),
so rather than hooking every write, a sweep compares, for each watched segment, who
matches now with who matched at its last sweep (table `segment_members`), in two
set-based statements:
- the first sweep of a segment, or the first after its rule or the scoring rules
  changed, records the current members and enrols nobody: being in the segment when a
  sequence starts watching it (or when its definition changes) is not entering it;
- later sweeps record the newcomers (up to `batch` per segment; the rest the next
  time) and enrol each into every sequence the segment triggers (entry conditions
  apply, refusals are logged), and forget people who left, so leaving and coming back
  is entering again (the sequence's `reentry` decides whether they go in again);
- segments no sequence watches any more are forgotten, so watching one again starts
  afresh.

The scheduler calls `sweep_segment_entries` periodically.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable

from sqlalchemy import delete, exists, insert, literal, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.models import Profile, SegmentMember, SegmentWatch, UTCDateTime
from backend.scoring.rules import ScoringRules
from backend.segments import store as segment_store
from backend.segments.rules import where_clause
from backend.sequences.definition import SegmentEnteredTrigger, SequenceDefinition
from backend.sequences.enrolment import TriggerEvent, enrol_if_allowed

log = get_logger(__name__)

SEGMENT_ENTERED = "segment_entered"


def watched_segments(
    sequences: Iterable[SequenceDefinition],
) -> dict[str, list[SequenceDefinition]]:
    """Segment name -> the sequences that someone entering it enrols into."""
    watched: dict[str, list[SequenceDefinition]] = {}
    for sequence in sequences:
        if isinstance(sequence.trigger, SegmentEnteredTrigger):
            watched.setdefault(sequence.trigger.segment_entered, []).append(sequence)
    return watched


async def sweep_segment_entries(
    sessions: async_sessionmaker[AsyncSession],
    sequences: Iterable[SequenceDefinition],
    clock: Clock,
    rules: ScoringRules,
    batch: int = 1000,
) -> int:
    """Compare every watched segment's members with its last sweep and enrol the people
    who entered; how many enrolments were made. Each segment is one transaction: a
    failure (logged) leaves it for the next sweep and does not stop the others."""
    watched = watched_segments(sequences)
    async with sessions.begin() as session:
        names = list(watched)
        await session.execute(delete(SegmentMember).where(SegmentMember.segment.not_in(names)))
        await session.execute(delete(SegmentWatch).where(SegmentWatch.segment.not_in(names)))
    enrolled = 0
    for name in sorted(watched):
        try:
            async with sessions.begin() as session:
                enrolled += await _sweep(session, name, watched[name], clock, rules, batch)
        except (IntegrityError, DBAPIError) as error:
            # Another sweep (another worker) got there first, or the database was busy.
            log.warning("segment_entries.sweep_failed", segment=name, error=type(error).__name__)
    return enrolled


def _fingerprint(rule: object, rules: ScoringRules) -> str:
    """What membership depends on besides the data: the rule and the scoring rules."""
    text = json.dumps(rule, sort_keys=True, separators=(",", ":")) + rules.fingerprint
    return hashlib.sha256(text.encode()).hexdigest()


async def _sweep(
    session: AsyncSession,
    name: str,
    triggered: list[SequenceDefinition],
    clock: Clock,
    rules: ScoringRules,
    batch: int,
) -> int:
    segment = await segment_store.get(session, name)
    if segment is None:
        log.warning("segment_entries.segment_missing", segment=name)
        return 0
    now = clock.now()
    fingerprint = _fingerprint(segment.rule, rules)
    is_member = where_clause(segment_store.rule_of(segment), rules.context(now))
    # One sweep of a segment at a time (PostgreSQL; SQLite has one writer anyway).
    watch = await session.get(SegmentWatch, name, with_for_update=True)
    at = literal(now, UTCDateTime())

    if watch is None or watch.rules_fingerprint != fingerprint:
        reason = "new" if watch is None else "definition-changed"
        if watch is None:
            session.add(
                SegmentWatch(
                    segment=name, rules_fingerprint=fingerprint, watched_since=now, swept_at=now
                )
            )
            await session.flush()
        else:
            await session.execute(delete(SegmentMember).where(SegmentMember.segment == name))
            watch.rules_fingerprint, watch.swept_at = fingerprint, now
        result = await session.execute(
            insert(SegmentMember).from_select(
                ["segment", "profile_id", "entered_at"],
                select(literal(name), Profile.id, at).where(is_member),
            )
        )
        log.info(
            "segment_entries.watching", segment=name, reason=reason,
            members=getattr(result, "rowcount", None),
        )  # fmt: skip
        return 0

    left = await session.execute(
        delete(SegmentMember).where(
            SegmentMember.segment == name,
            ~exists(select(Profile.id).where(Profile.id == SegmentMember.profile_id, is_member)),
        )
    )
    newcomers = (
        select(literal(name), Profile.id, at)
        .where(
            is_member,
            ~exists().where(SegmentMember.segment == name, SegmentMember.profile_id == Profile.id),
        )
        .order_by(Profile.id)
        .limit(batch)
    )
    entered: list[uuid.UUID] = list(
        await session.scalars(
            insert(SegmentMember)
            .from_select(["segment", "profile_id", "entered_at"], newcomers)
            .returning(SegmentMember.profile_id)
        )
    )
    watch.swept_at = now
    if not entered:
        return 0

    event = TriggerEvent(SEGMENT_ENTERED, {"segment": name})
    made = 0
    profiles = await session.scalars(select(Profile).where(Profile.id.in_(entered)))
    for profile in profiles:
        for sequence in triggered:
            if await enrol_if_allowed(session, sequence, profile, event, clock, rules):
                made += 1
    log.info(
        "segment_entries.swept", segment=name, entered=len(entered),
        left=getattr(left, "rowcount", None), enrolled=made,
    )  # fmt: skip
    return made
