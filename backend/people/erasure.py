"""GDPR: everything held about a person, as JSON; and erasing them, leaving a tombstone.

The tombstone keeps only keyed hashes (HMAC-SHA256 with the installation's secret key)
of the erased identities. Phone numbers are few enough to brute-force a plain hash; a
keyed one reveals nothing without the key, yet lets Parley recognise the person if an
import brings them back, so that a withdrawn consent is not silently resurrected.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.clock import Clock
from backend.core.identities import IdentityKind
from backend.core.models import (
    AuditEntry,
    ConsentEvent,
    ConsentState,
    Demo,
    Event,
    Handoff,
    Identity,
    Merge,
    Profile,
    ScoreContribution,
    Tombstone,
)


def identity_hash(key: bytes, kind: IdentityKind | str, address: str) -> str:
    return hmac.new(key, f"{kind}:{address}".encode(), hashlib.sha256).hexdigest()


async def erased_at(
    session: AsyncSession, key: bytes, kind: IdentityKind, address: str
) -> datetime | None:
    """When a person with this identity was erased, if ever."""
    return await session.scalar(
        select(Tombstone.erased_at)
        .where(Tombstone.identity_hash == identity_hash(key, kind, address))
        .order_by(Tombstone.erased_at.desc())
        .limit(1)
    )


async def export(session: AsyncSession, profile: Profile) -> dict[str, Any]:
    """Everything Parley holds about this person (profiles merged into it included)."""
    pid = profile.id
    merged_ids = list(
        await session.scalars(select(Profile.id).where(Profile.merged_into_id == pid))
    )
    events = await session.scalars(select(Event).where(Event.profile_id == pid).order_by(Event.id))
    ledger = await session.scalars(
        select(ConsentEvent).where(ConsentEvent.profile_id == pid).order_by(ConsentEvent.seq)
    )
    states = await session.scalars(select(ConsentState).where(ConsentState.profile_id == pid))
    contributions = await session.scalars(
        select(ScoreContribution).where(ScoreContribution.profile_id == pid)
    )
    merges = await session.scalars(select(Merge).where(Merge.survivor_id == pid).order_by(Merge.id))
    demos = await session.scalars(
        select(Demo).where(Demo.profile_id == pid).order_by(Demo.starts_at)
    )
    handoffs = await session.scalars(
        select(Handoff).where(Handoff.profile_id == pid).order_by(Handoff.opened_at)
    )
    targets = [str(pid), *(str(m) for m in merged_ids)]
    audit = await session.scalars(
        select(AuditEntry).where(AuditEntry.target.in_(targets)).order_by(AuditEntry.id)
    )
    return {
        "profile": _row(profile, exclude={"merged_into_id"}),
        "identities": [_row(i, exclude={"profile_id"}) for i in profile.identities],
        "events": [_row(e, exclude={"profile_id"}) for e in events],
        "consent": {
            "ledger": [_row(c, exclude={"profile_id"}) for c in ledger],
            "current": [_row(s, exclude={"profile_id"}) for s in states],
        },
        "score_contributions": [_row(c, exclude={"profile_id"}) for c in contributions],
        "merged_profiles": [_row(m, exclude={"survivor_id"}) for m in merges],
        "demos": [_row(d, exclude={"profile_id"}) for d in demos],
        "handoffs": [_row(h, exclude={"profile_id"}) for h in handoffs],
        "changes": [_row(a, exclude={"token_id"}) for a in audit],
    }


def _row(obj: Any, exclude: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in obj.__table__.columns:
        if column.key in exclude:
            continue
        value = getattr(obj, column.key)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[column.key] = value
    return out


async def erase(session: AsyncSession, profile: Profile, key: bytes, clock: Clock) -> int:
    """Erase a person: their profile (and those merged into it), identities, events,
    consent ledger and scores. Returns how many identities the tombstone remembers."""
    now = clock.now()
    ids = [
        profile.id,
        *(await session.scalars(select(Profile.id).where(Profile.merged_into_id == profile.id))),
    ]
    identities = (
        await session.execute(
            select(Identity.kind, Identity.address).where(Identity.profile_id.in_(ids))
        )
    ).all()
    for kind, address in identities:
        session.add(Tombstone(identity_hash=identity_hash(key, kind, address), erased_at=now))
    # Foreign keys cascade on PostgreSQL and (with foreign_keys=ON) on SQLite; deleting
    # explicitly keeps the order obvious and does not depend on either.
    for table in (ScoreContribution, ConsentState, ConsentEvent, Event, Demo, Handoff, Identity):
        await session.execute(delete(table).where(table.profile_id.in_(ids)))
    await session.execute(delete(Merge).where(Merge.survivor_id.in_(ids)))
    await session.execute(delete(Profile).where(Profile.id.in_(ids[1:])))
    await session.execute(delete(Profile).where(Profile.id == profile.id))
    await session.flush()
    session.expunge(profile)
    return len(identities)
