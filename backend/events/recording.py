"""Behaviour events: what websites, shops and the bot report that a person did.

Events are stored once per idempotency key, attached to a profile (found by id, or by
identity, created if new), and scored as they arrive; the messages people sent are
added to the conversations' roll-ups (backend.conversations.rollups).
`EventRecorder.record` is the one way an event is recorded, whoever reports it (the
API, the bot, a demo booking, a sequence's points): it stores, scores, enrols into the
sequences the event triggers and writes the audit log, all in the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from backend.conversations import rollups
from backend.core import audit, bulk
from backend.core.identities import IdentityKind
from backend.core.models import Event, Identity, Profile
from backend.people.profiles import ProfileDirectory
from backend.scoring import rules as scoring
from backend.sequences import enrolment
from backend.sequences.definition import SequenceDefinition

# Events may lie a little in the future: the sender's clock may run ahead. One further
# ahead is refused (the API answers 422; the consumer of Rasa's events skips it).
CLOCK_SKEW_SECONDS = 300


class Incoming(NamedTuple):
    """An event to record. (This and Outcome are tuples: a batch makes a thousand.)"""

    type: str
    properties: Mapping[str, Any]
    occurred_at: datetime | None
    idempotency_key: str | None
    profile_id: uuid.UUID | None = None
    # Or, instead of an id, an identity (address already normalised).
    identity: tuple[IdentityKind, str] | None = None


class Outcome(NamedTuple):
    status: str  # stored or duplicate
    event_id: int | None
    profile_id: uuid.UUID


class UnknownProfiles(LookupError):
    """Some events name profile ids that do not exist; `indexes` says which."""

    def __init__(self, indexes: list[int]) -> None:
        super().__init__(f"unknown profile in events {indexes}")
        self.indexes = indexes


@dataclass(frozen=True)
class EventRecorder:
    directory: ProfileDirectory
    sequences: Sequence[SequenceDefinition]

    async def record(
        self, session: AsyncSession, batch: Sequence[Incoming], actor: audit.Actor
    ) -> list[Outcome]:
        """Store, score and audit a batch, and start the sequences its events trigger, in
        the same transaction: an event is never stored without its enrolments."""
        outcomes = await ingest(session, batch, self.directory)
        fresh = [
            (outcome, event)
            for outcome, event in zip(outcomes, batch, strict=True)
            if outcome.status == "stored"
        ]
        if not fresh:
            return outcomes
        clock = self.directory.clock
        await enrolment.enrol_on_events(
            session,
            self.sequences,
            [enrolment.RecordedEvent(o.profile_id, e.type, e.properties) for o, e in fresh],
            clock,
            self.directory.rules,
        )
        await audit.record(
            session, clock, actor, "record_events", None,
            stored=len(fresh), types=sorted({e.type for _, e in fresh}),
        )  # fmt: skip
        return outcomes

    async def record_points(
        self, session: AsyncSession, profile_id: uuid.UUID, properties: dict[str, Any]
    ) -> None:
        """A follow-up step's points (`sequence`, `step`, `points`), recorded for the
        scheduler."""
        await self.record(
            session,
            [Incoming(scoring.SEQUENCE_POINTS, properties, None, None, profile_id)],
            audit.SCHEDULER,
        )


async def ingest(
    session: AsyncSession, batch: Sequence[Incoming], directory: ProfileDirectory
) -> list[Outcome]:
    """Store a batch (all of it or none of it), skipping keys already seen, and score it."""
    now = directory.clock.now()
    owners = await _owners(session, batch, directory)

    keys = [e.idempotency_key for e in batch if e.idempotency_key]
    seen: dict[str, tuple[int, uuid.UUID]] = {}
    if keys:
        rows = await session.execute(
            select(Event.idempotency_key, Event.id, Event.profile_id).where(
                bulk.one_of(session, Event.idempotency_key, keys)
            )
        )
        seen = {key: (event_id, owner) for key, event_id, owner in rows if key}

    outcomes: list[Outcome | None] = [None] * len(batch)
    fresh: list[tuple[int, dict[str, Any]]] = []
    batch_keys: dict[str, int] = {}
    for index, event in enumerate(batch):
        key = event.idempotency_key
        if key and key in seen:
            event_id, owner = seen[key]
            outcomes[index] = Outcome("duplicate", event_id, owner)
            continue
        if key and key in batch_keys:
            outcomes[index] = Outcome("duplicate", None, owners[batch_keys[key]])
            continue
        if key:
            batch_keys[key] = index
        fresh.append(
            (
                index,
                {
                    "profile_id": owners[index],
                    "type": event.type,
                    "properties": dict(event.properties),
                    "occurred_at": event.occurred_at or now,
                    "received_at": now,
                    "idempotency_key": key,
                },
            )
        )
    if fresh:
        ids = await bulk.insert_returning_ids(
            session, cast(Table, Event.__table__), [row for _, row in fresh]
        )
        for (index, row), event_id in zip(fresh, ids, strict=True):
            outcomes[index] = Outcome("stored", event_id, row["profile_id"])
        await scoring.apply_events(
            session,
            directory.rules,
            (
                scoring.Scored(
                    row["profile_id"], row["type"], row["properties"], row["occurred_at"]
                )
                for _, row in fresh
            ),
        )
        # Last: the daily counts are rows every transaction adds to, held until commit.
        await rollups.add(
            session,
            (
                found
                for _, row in fresh
                if (
                    found := rollups.said(
                        row["profile_id"], row["type"], row["properties"], row["occurred_at"]
                    )
                )
            ),
        )
    await session.flush()
    return [outcome for outcome in outcomes if outcome is not None]


async def _owners(
    session: AsyncSession, batch: Sequence[Incoming], directory: ProfileDirectory
) -> list[uuid.UUID]:
    """The (surviving) profile of every event; profiles for new identities are created."""
    ids = {e.profile_id for e in batch if e.profile_id is not None}
    survivors: dict[uuid.UUID, uuid.UUID] = {}
    if ids:
        found = await session.execute(
            select(Profile.id, Profile.merged_into_id).where(bulk.one_of(session, Profile.id, ids))
        )
        survivors = {pid: merged or pid for pid, merged in found}
    unknown = [
        i for i, e in enumerate(batch) if e.profile_id is not None and e.profile_id not in survivors
    ]
    if unknown:
        raise UnknownProfiles(unknown)

    wanted = {e.identity for e in batch if e.identity is not None}
    by_identity: dict[tuple[IdentityKind, str], uuid.UUID] = {}
    if wanted:
        rows = await session.execute(
            select(Identity.kind, Identity.address, Identity.profile_id).where(
                tuple_(Identity.kind, Identity.address).in_([(k.value, a) for k, a in wanted])
            )
        )
        by_identity = {(IdentityKind(kind), address): pid for kind, address, pid in rows}
        for kind, address in sorted(wanted - by_identity.keys()):
            made = await directory.identify(session, kind=kind, address=address)
            by_identity[(kind, address)] = made.profile.id

    owners: list[uuid.UUID] = []
    for event in batch:
        if event.profile_id is not None:
            owners.append(survivors[event.profile_id])
        else:
            assert event.identity is not None
            owners.append(by_identity[event.identity])
    return owners


async def recent(
    session: AsyncSession, profile_id: uuid.UUID, limit: int, before: int | None = None
) -> list[Event]:
    """A profile's events, newest first (keyset pagination on the event id)."""
    query = select(Event).where(Event.profile_id == profile_id)
    if before is not None:
        query = query.where(Event.id < before)
    return list(await session.scalars(query.order_by(Event.id.desc()).limit(limit)))
