"""What the scheduler's guards read about the people in a batch of due steps, loaded
for the whole batch in a few set-based queries instead of a dozen per step: their live
profiles (with their addresses), consent, last reply, goal events, recent marketing
messages, and how often each step was visited. The scheduler (`worker`) loads
it inside the transaction that decides the batch, and notes its own sends in it, so a
second step for one person in the same batch sees the first."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.consent import ledger as consent
from backend.consent.ledger import Channel, Purpose
from backend.core.identities import IdentityKind
from backend.core.models import Enrolment, Event, Message, Profile, SequenceWork
from backend.messaging.guards import recent_marketing
from backend.people.profiles import ProfileDirectory
from backend.sequences.definition import SequenceDefinition


@dataclass(frozen=True)
class Goal:
    type: str
    properties: Mapping[str, Any]
    received_at: datetime


@dataclass
class Attempts:
    """The latest attempt number of each (enrolment, step) visited."""

    latest: dict[tuple[uuid.UUID, str], int] = field(default_factory=dict)

    def next(self, enrolment_id: uuid.UUID, step: str) -> int:
        """The attempt number for a new visit to a step (a loop may come back to it)."""
        attempt = self.latest.get((enrolment_id, step), 0) + 1
        self.latest[(enrolment_id, step)] = attempt
        return attempt


@dataclass
class Facts:
    # The live profile for each enrolment's profile id (a merged profile's survivor).
    profiles: dict[uuid.UUID, Profile | None]
    consents: dict[uuid.UUID, consent.Current]
    # When each person last wrote to us (keyword texts such as STOP are not replies).
    replied_at: dict[uuid.UUID, datetime]
    goals: dict[uuid.UUID, list[Goal]]
    # Marketing messages the caps count (messaging.guards.recent_marketing):
    # (created_at, send_key).
    marketing: dict[uuid.UUID, list[tuple[datetime, str | None]]]
    attempts: Attempts

    def consent_state(
        self, profile_id: uuid.UUID, channel: Channel, purpose: Purpose
    ) -> consent.State:
        found = self.consents.get(profile_id, {}).get((channel, purpose))
        return found[0] if found else consent.State.NONE

    def may_send(self, profile_id: uuid.UUID, channel: Channel, purpose: Purpose) -> bool:
        return consent.allows(self.consent_state(profile_id, channel, purpose), purpose)

    def replied_since(self, profile_id: uuid.UUID, since: datetime) -> bool:
        last = self.replied_at.get(profile_id)
        return last is not None and last >= since

    def note_marketing(self, profile_id: uuid.UUID, at: datetime, send_key: str) -> None:
        self.marketing.setdefault(profile_id, []).append((at, send_key))


def address_of(profile: Profile, kind: IdentityKind) -> str | None:
    """The person's address of this kind: their first SMS number, or their latest web
    chat session (the conversation a web follow-up goes into)."""
    found = [i.address for i in profile.identities if i.kind == kind.value]
    if not found:
        return None
    return found[-1] if kind is IdentityKind.WEB else found[0]


async def load_attempts(session: AsyncSession, enrolment_ids: Iterable[uuid.UUID]) -> Attempts:
    rows = await session.execute(
        select(SequenceWork.enrolment_id, SequenceWork.step, func.max(SequenceWork.attempt))
        .where(SequenceWork.enrolment_id.in_(set(enrolment_ids)))
        .group_by(SequenceWork.enrolment_id, SequenceWork.step)
    )
    return Attempts({(e, s): int(a or 0) for e, s, a in rows})


async def load_facts(
    session: AsyncSession,
    directory: ProfileDirectory,
    enrolments: list[Enrolment],
    sequences: Mapping[str, SequenceDefinition],
    now: datetime,
) -> Facts:
    """The facts for these enrolments' steps, in seven queries at most."""
    profiles = await directory.resolve_many(session, {e.profile_id for e in enrolments})
    live = {p.id for p in profiles.values() if p is not None}
    facts = Facts(
        profiles=profiles,
        consents=await consent.current_of(session, live),
        replied_at={},
        goals={},
        marketing={},
        attempts=await load_attempts(session, [e.id for e in enrolments]),
    )
    if not live:
        return facts
    earliest = min(e.enrolled_at for e in enrolments)
    replies = await session.execute(
        select(Message.profile_id, func.max(Message.created_at))
        .where(
            Message.profile_id.in_(live),
            Message.direction == "inbound",
            Message.keyword.is_(None),
        )
        .group_by(Message.profile_id)
    )
    facts.replied_at = {p: at for p, at in replies if p is not None}
    goal_types = {
        goal.event
        for e in enrolments
        if (sequence := sequences.get(e.sequence)) is not None
        for goal in sequence.exit_when.goal
    }
    if goal_types:
        events = await session.execute(
            select(Event.profile_id, Event.type, Event.properties, Event.received_at).where(
                Event.profile_id.in_(live),
                Event.type.in_(goal_types),
                Event.received_at >= earliest,
            )
        )
        for profile_id, type_, properties, received_at in events:
            facts.goals.setdefault(profile_id, []).append(
                Goal(type_, properties or {}, received_at)
            )
    facts.marketing = await recent_marketing(session, live, now)
    return facts
