"""Profiles: who a person is, found or created through any of their identities."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.clock import Clock
from backend.identities import IdentityKind
from backend.models import Identity, Profile


@dataclass(frozen=True)
class Identified:
    profile: Profile
    created: bool


async def get(session: AsyncSession, profile_id: uuid.UUID) -> Profile | None:
    return await session.get(Profile, profile_id)


async def find_by_identity(
    session: AsyncSession, kind: IdentityKind, address: str
) -> Profile | None:
    return await session.scalar(
        select(Profile)
        .join(Identity, Identity.profile_id == Profile.id)
        .where(Identity.kind == kind.value, Identity.address == address)
    )


async def identify(
    session: AsyncSession,
    *,
    kind: IdentityKind,
    address: str,
    fields: Mapping[str, Any],
    attributes: Mapping[str, Any],
    clock: Clock,
) -> Identified:
    """The profile behind (kind, address), created if new, with fields and attributes applied.

    `address` must already be normalised. A null attribute value removes the attribute.
    """
    created = False
    profile = await find_by_identity(session, kind, address)
    if profile is None:
        now = clock.now()
        try:
            # A concurrent request may create the same identity first: the unique
            # index decides, and the loser reads the winner's profile.
            async with session.begin_nested():
                profile = Profile(created_at=now, updated_at=now, attributes={})
                profile.identities.append(
                    Identity(kind=kind.value, address=address, created_at=now)
                )
                session.add(profile)
            created = True
        except IntegrityError:
            profile = await find_by_identity(session, kind, address)
            if profile is None:
                raise
    if fields or attributes:
        _apply(profile, fields, attributes)
        profile.updated_at = clock.now()
    await session.flush()
    return Identified(profile, created)


def _apply(profile: Profile, fields: Mapping[str, Any], attributes: Mapping[str, Any]) -> None:
    for name, value in fields.items():
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
