"""Profiles: who a person is, found or created through any of their identities, kept up
to date, and merged when two turn out to be the same person."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ScalarSelect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from backend.consent import ledger as consent
from backend.core import audit
from backend.core.clock import Clock
from backend.core.identities import PHONE_KINDS, IdentityKind
from backend.core.models import (
    ConsentEvent,
    ConsentState,
    ConversationRollup,
    Demo,
    Enrolment,
    Event,
    Handoff,
    HeldMessage,
    Identity,
    Merge,
    Message,
    Profile,
    ScoreContribution,
)
from backend.people import erasure
from backend.scoring import rules as scoring
from backend.scoring.rules import ScoringRules

CORE_FIELDS = ("first_name", "last_name", "email", "phone", "locale", "timezone", "company")


def _set(profile: Profile, fields: Mapping[str, Any], attributes: Mapping[str, Any]) -> bool:
    """Set core fields and free attributes (None removes an attribute); whether any were
    given."""
    for name, value in fields.items():
        if name not in CORE_FIELDS:
            raise ValueError(f"{name} is not a core field")
        setattr(profile, name, value)
    if attributes:
        merged = dict(profile.attributes)
        for key, value in attributes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        # A new dict, so SQLAlchemy sees the JSON column change.
        profile.attributes = merged
    return bool(fields or attributes)


@dataclass(frozen=True)
class Identified:
    profile: Profile
    created: bool


@dataclass(frozen=True)
class ProfileDirectory:
    """Finding, creating, changing and merging profiles, with what that touches:
    scores (attribute rules) and the consent of people who were once erased."""

    clock: Clock
    rules: ScoringRules
    erasure_key: bytes

    async def get(self, session: AsyncSession, profile_id: uuid.UUID) -> Profile | None:
        """The profile with this id, merged or not."""
        return await session.get(Profile, profile_id)

    async def resolve(self, session: AsyncSession, profile_id: uuid.UUID) -> Profile | None:
        """The live profile for this id: itself, or the one it was merged into."""
        profile = await session.get(Profile, profile_id)
        if profile is not None and profile.merged_into_id is not None:
            profile = await session.get(Profile, profile.merged_into_id)
        return profile

    async def resolve_many(
        self, session: AsyncSession, profile_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, Profile | None]:
        """`resolve` for many ids in two queries; every id asked about is a key."""
        wanted = set(profile_ids)
        loaded = {
            p.id: p for p in await session.scalars(select(Profile).where(Profile.id.in_(wanted)))
        }
        targets = {p.merged_into_id for p in loaded.values() if p.merged_into_id is not None}
        if targets - loaded.keys():
            query = select(Profile).where(Profile.id.in_(targets - loaded.keys()))
            loaded |= {p.id: p for p in await session.scalars(query)}
        found: dict[uuid.UUID, Profile | None] = {}
        for profile_id in wanted:
            profile = loaded.get(profile_id)
            if profile is not None and profile.merged_into_id is not None:
                profile = loaded.get(profile.merged_into_id)
            found[profile_id] = profile
        return found

    async def ids_by_identity(
        self, session: AsyncSession, kind: IdentityKind, addresses: Iterable[str]
    ) -> dict[str, uuid.UUID]:
        """Whose addresses these are (as `find_by_identity` finds them), in one query;
        unknown addresses are left out."""
        rows = await session.execute(
            select(Identity.address, Identity.profile_id)
            .where(Identity.kind.in_(_kinds(kind)), Identity.address.in_(set(addresses)))
            .order_by(Identity.created_at)
        )
        found: dict[str, uuid.UUID] = {}
        for address, profile_id in rows:
            found.setdefault(address, profile_id)
        return found

    def owner_of(self, kind: IdentityKind, address: str) -> ScalarSelect[uuid.UUID]:
        """Whose address this is, as an expression to use inside a statement; NULL if it
        is unknown. The first identity with the address wins."""
        return (
            select(Identity.profile_id)
            .where(Identity.kind.in_(_kinds(kind)), Identity.address == address)
            .order_by(Identity.created_at)
            .limit(1)
            .scalar_subquery()
        )

    async def find_by_identity(
        self, session: AsyncSession, kind: IdentityKind, address: str
    ) -> Profile | None:
        return await session.scalar(
            select(Profile).where(Profile.id == self.owner_of(kind, address))
        )

    async def identify(
        self,
        session: AsyncSession,
        *,
        kind: IdentityKind,
        address: str,
        fields: Mapping[str, Any] | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Identified:
        """The profile behind (kind, address), created if new, with fields and attributes set.

        `address` must already be normalised. A null attribute value removes the attribute.
        """
        created = False
        profile = await self.find_by_identity(session, kind, address)
        if profile is None:
            now = self.clock.now()
            try:
                # A concurrent request may create the same identity first: the unique
                # index decides, and the loser reads the winner's profile.
                async with session.begin_nested():
                    profile = Profile(
                        created_at=now,
                        updated_at=now,
                        attributes={},
                        score_events=0.0,
                        score_attributes=0.0,
                    )
                    _set(profile, fields or {}, attributes or {})
                    profile.identities.append(
                        Identity(kind=kind.value, address=address, created_at=now)
                    )
                    session.add(profile)
                created = True
            except IntegrityError:
                profile = await self.find_by_identity(session, kind, address)
                if profile is None:
                    raise
            if created:
                await self._remember_erasure(session, profile, kind, address)
                # Inserted with its fields and attributes, and nothing scored it yet.
                await self._rescore(session, profile, new=True)
                return Identified(profile, created)
        elif not any(i.kind == kind and i.address == address for i in profile.identities):
            # Found through the same number on the other phone channel: note this one too.
            profile.identities.append(
                Identity(kind=kind.value, address=address, created_at=self.clock.now())
            )
        await self.update(session, profile, fields or {}, attributes or {})
        return Identified(profile, created)

    async def update(
        self,
        session: AsyncSession,
        profile: Profile,
        fields: Mapping[str, Any],
        attributes: Mapping[str, Any],
        touched: bool = False,
    ) -> Profile:
        """Set core fields and free attributes (None removes an attribute), then rescore;
        `touched`: something else about the profile changed, so rescore it anyway."""
        if _set(profile, fields, attributes) or touched:
            profile.updated_at = self.clock.now()
            await self._rescore(session, profile)
        return profile

    async def _rescore(self, session: AsyncSession, profile: Profile, new: bool = False) -> None:
        """The attribute rules' points, from the profile as it now is (`new`: created in
        this transaction, so it has no points to take back)."""
        await session.flush()
        totals = await scoring.refresh_attributes(
            session, self.rules, [profile.id], self.clock.now(), new=new
        )
        # What was just written: no need to read it back.
        set_committed_value(profile, "score_attributes", totals[profile.id])

    async def add_identity(
        self,
        session: AsyncSession,
        profile: Profile,
        kind: IdentityKind,
        address: str,
        actor: str | None,
    ) -> tuple[Profile, uuid.UUID | None]:
        """Give a profile another identity. If that identity is someone else's, the two
        are one person: they merge, and the result says which profile was merged away."""
        owner = await self.find_by_identity(session, kind, address)
        if owner is None:
            profile.identities.append(
                Identity(kind=kind.value, address=address, created_at=self.clock.now())
            )
            await self.update(session, profile, {}, {}, touched=True)
            return profile, None
        if owner.id == profile.id:
            return profile, None
        survivor = await self.merge(
            session, profile, owner, reason=f"both have the {kind.value} identity", actor=actor
        )
        merged_away = owner.id if survivor.id == profile.id else profile.id
        return survivor, merged_away

    async def merge(
        self, session: AsyncSession, one: Profile, other: Profile, reason: str, actor: str | None
    ) -> Profile:
        """Merge two profiles of the same person into the older one; return it.

        Identities (and so their conversations), events, consent history, score
        points, messages, held messages, enrolments, demos and hand-offs move to the
        survivor, so the caps, a sequence's reply exit and histories see one person;
        where both were in the same sequence at once, the survivor's enrolment goes on
        and the other ends (`merged`). For
        every core field and attribute both have, the value from the more recently
        updated profile wins; what only one has is kept. The merged profile stays as an
        empty record pointing at the survivor.
        """
        survivor, merged = sorted((one, other), key=lambda p: (p.created_at, str(p.id)))
        newer, older = sorted((one, other), key=lambda p: p.updated_at, reverse=True)
        now = self.clock.now()

        for name in CORE_FIELDS:
            value = getattr(newer, name)
            setattr(survivor, name, value if value is not None else getattr(older, name))
        survivor.attributes = {**older.attributes, **newer.attributes}

        await _end_double_enrolments(session, survivor.id, merged.id, now)
        for table in (
            Identity,
            Event,
            ConversationRollup,
            ConsentEvent,
            Demo,
            Handoff,
            Message,
            HeldMessage,
            Enrolment,
        ):
            await session.execute(
                update(table).where(table.profile_id == merged.id).values(profile_id=survivor.id)
            )
        await _merge_contributions(session, survivor.id, merged.id)
        survivor.score_events += merged.score_events
        await session.execute(
            update(Profile)
            .where(Profile.merged_into_id == merged.id)
            .values(merged_into_id=survivor.id)
        )
        for name in CORE_FIELDS:
            setattr(merged, name, None)
        merged.attributes = {}
        merged.score_events = 0.0
        merged.score_attributes = 0.0
        merged.merged_into_id = survivor.id
        merged.updated_at = now
        survivor.updated_at = now
        session.add(
            Merge(
                survivor_id=survivor.id,
                merged_id=merged.id,
                reason=reason,
                merged_at=now,
                merged_by=actor,
            )
        )
        await session.flush()
        session.expire(survivor, ["identities"])
        await consent.refresh(session, survivor.id)
        await session.execute(
            ConsentState.__table__.delete().where(ConsentState.profile_id == merged.id)  # type: ignore[attr-defined]
        )
        await self.update(session, survivor, {}, {}, touched=True)
        await session.refresh(survivor, ["identities"])
        return survivor

    async def _remember_erasure(
        self, session: AsyncSession, profile: Profile, kind: IdentityKind, address: str
    ) -> None:
        """A new profile for someone erased before starts with marketing withdrawn."""
        erased_at = await erasure.erased_at(session, self.erasure_key, kind, address)
        if erased_at is None:
            return
        await consent.record(
            session,
            profile.id,
            consent.Entry(
                channel=consent.Channel.ALL,
                purpose=consent.Purpose.MARKETING,
                action=consent.Action.WITHDRAW,
                source=consent.Source.ERASURE,
                wording=(
                    f"This person's data was erased on {erased_at.date().isoformat()}; "
                    "marketing stays withdrawn until they consent again in their own words."
                ),
            ),
            self.clock,
            audit.SystemActor("parley"),
        )


async def _merge_contributions(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID
) -> None:
    rows = await session.scalars(
        select(ScoreContribution).where(ScoreContribution.profile_id.in_([survivor_id, merged_id]))
    )
    combined: dict[str, ScoreContribution] = {}
    moving: list[ScoreContribution] = []
    for row in rows:
        (
            combined.setdefault(row.rule, row)
            if row.profile_id == survivor_id
            else moving.append(row)
        )
    for row in moving:
        kept = combined.get(row.rule)
        if kept is None:
            await session.delete(row)
            await session.flush()
            session.add(
                ScoreContribution(
                    profile_id=survivor_id,
                    rule=row.rule,
                    points=row.points,
                    count=row.count,
                    last_at=row.last_at,
                )
            )
        else:
            kept.points += row.points
            kept.count += row.count
            if row.last_at and (kept.last_at is None or row.last_at > kept.last_at):
                kept.last_at = row.last_at
            await session.delete(row)
    await session.flush()


def _kinds(kind: IdentityKind) -> list[str]:
    """The identity kinds an address of `kind` is looked up in: a number someone texts
    from and calls from is one person, so sms and voice lead to the same profile."""
    return [k.value for k in PHONE_KINDS] if kind in PHONE_KINDS else [kind.value]


# What belongs to a person, and moves to the survivor when two profiles merge.
MOVED_ON_MERGE = (
    Identity, Event, ConsentEvent, Demo, Handoff, Message, HeldMessage, Enrolment,
)  # fmt: skip


async def _end_double_enrolments(
    session: AsyncSession, survivor_id: uuid.UUID, merged_id: uuid.UUID, now: datetime
) -> None:
    """End the merged profile's active enrolments in sequences the survivor is active
    in too: one person is in a sequence once."""
    survivors = select(Enrolment.sequence).where(
        Enrolment.profile_id == survivor_id, Enrolment.status == "active"
    )
    await session.execute(
        update(Enrolment)
        .where(
            Enrolment.profile_id == merged_id,
            Enrolment.status == "active",
            Enrolment.sequence.in_(survivors),
        )
        .values(status="exited", exit_reason="merged", updated_at=now)
    )
