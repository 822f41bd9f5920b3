"""Stored segments (from data/segments/*.yml and from the API), and asking them questions:
how many, who, and is this person in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.models import Profile, Segment
from backend.segments.rules import Context, Rule, SegmentDefinition, where_clause

RULE: TypeAdapter[Rule] = TypeAdapter(Rule)


def rule_json(rule: Rule) -> dict[str, Any]:
    dumped: dict[str, Any] = RULE.dump_python(
        rule, mode="json", by_alias=True, exclude_defaults=True
    )
    return dumped


def rule_of(segment: Segment) -> Rule:
    return RULE.validate_python(segment.rule)


class SegmentConflict(Exception):
    """The segment exists already, or belongs to a file and cannot be changed here."""


@dataclass(frozen=True)
class Synced:
    added: int
    changed: int
    removed: int


async def sync_files(
    session: AsyncSession, definitions: list[SegmentDefinition], now: datetime
) -> Synced:
    """Make the stored file segments match data/segments/: add, change, remove."""
    stored = {s.name: s for s in await session.scalars(select(Segment))}
    added = changed = 0
    for definition in definitions:
        rule = rule_json(definition.rule)
        existing = stored.get(definition.name)
        if existing is None:
            session.add(
                Segment(
                    name=definition.name,
                    description=definition.description,
                    rule=rule,
                    source="file",
                    created_at=now,
                    updated_at=now,
                )
            )
            added += 1
        elif (existing.source, existing.description, existing.rule) != (
            "file",
            definition.description,
            rule,
        ):
            # A file takes over an API segment of the same name: files are the source of truth.
            existing.source = "file"
            existing.description = definition.description
            existing.rule = rule
            existing.updated_at = now
            changed += 1
    names = {d.name for d in definitions}
    gone = [name for name, s in stored.items() if s.source == "file" and name not in names]
    if gone:
        await session.execute(delete(Segment).where(Segment.name.in_(gone)))
    await session.flush()
    return Synced(added, changed, len(gone))


async def all_segments(session: AsyncSession) -> list[Segment]:
    return list(await session.scalars(select(Segment).order_by(Segment.name)))


async def get(session: AsyncSession, name: str) -> Segment | None:
    return await session.scalar(select(Segment).where(Segment.name == name))


async def create(
    session: AsyncSession, name: str, description: str | None, rule: Rule, now: datetime
) -> Segment:
    if await get(session, name) is not None:
        raise SegmentConflict(f"a segment named {name!r} exists already")
    segment = Segment(
        name=name, description=description, rule=rule_json(rule), source="api",
        created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(segment)
    await session.flush()
    return segment


async def save(
    session: AsyncSession, name: str, description: str | None, rule: Rule, now: datetime
) -> tuple[Segment, bool]:
    """Create the API segment `name`, or replace its description and rule; whether it is
    new. Raises `SegmentConflict` for a segment from a file (edit the file)."""
    existing = await get(session, name)
    if existing is None:
        return await create(session, name, description, rule, now), True
    ensure_editable(existing)
    existing.description, existing.rule, existing.updated_at = description, rule_json(rule), now
    return existing, False


def ensure_editable(segment: Segment) -> None:
    if segment.source == "file":
        raise SegmentConflict(
            f"segment {segment.name!r} comes from data/segments/{segment.name}.yml: edit the file"
        )


async def count(session: AsyncSession, rule: Rule, context: Context) -> int:
    total = await session.scalar(
        select(func.count()).select_from(Profile).where(where_clause(rule, context))
    )
    return int(total or 0)


async def members(
    session: AsyncSession, rule: Rule, context: Context, limit: int, after: uuid.UUID | None
) -> list[Profile]:
    query = select(Profile).where(where_clause(rule, context))
    if after is not None:
        query = query.where(Profile.id > after)
    return list(await session.scalars(query.order_by(Profile.id).limit(limit)))


async def is_member(
    session: AsyncSession, rule: Rule, context: Context, profile_id: uuid.UUID
) -> bool:
    found = await session.scalar(
        select(Profile.id).where(
            Profile.id == profile_id, where_clause(rule, context.for_one_profile())
        )
    )
    return found is not None
