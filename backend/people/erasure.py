"""GDPR: everything held about a person, as JSON; and erasing them, leaving a tombstone.

Both reach the person's conversations in Rasa's tracker store, where the transcripts
are, and the backend's copy of their events consumed from RabbitMQ in the scale
profile (`rasa_events`, backend.rasa_events): every conversation of every identity that
names one (a phone number for texts and calls, a web chat session, an Alexa user) and
of their hand-offs and demos. The backend does not import Rasa: it reads a conversation
through the bot's locked read and erases one through the bot's erase endpoint, both
with Rasa's token (channels/conversation_batch.py; docs/privacy.md).

The tombstone keeps only keyed hashes (HMAC-SHA256 with the installation's secret key)
of the erased identities. Phone numbers are few enough to brute-force a plain hash; a
keyed one reveals nothing without the key, yet lets Parley recognise the person if an
import brings them back, so that a withdrawn consent is not silently resurrected, and
lets the consumer of Rasa's events refuse a queued copy of an erased conversation's
event (`erased_conversations`).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.conversations.rasa_client import RasaClient
from backend.core.clock import Clock
from backend.core.identities import PHONE_KINDS, IdentityKind
from backend.core.models import (
    AuditEntry,
    ConsentEvent,
    ConsentState,
    ConversationRollup,
    Demo,
    EmailSuppression,
    Enrolment,
    Event,
    Handoff,
    HeldMessage,
    Identity,
    Merge,
    Message,
    Profile,
    RasaEvent,
    ScoreContribution,
    SegmentMember,
    SequenceWork,
    Tombstone,
)

# Identity kinds whose address names a conversation in Rasa (its sender id).
CONVERSATION_KINDS = frozenset(
    {IdentityKind.SMS, IdentityKind.VOICE, IdentityKind.WEB, IdentityKind.ALEXA}
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


async def erased_conversations(
    session: AsyncSession, key: bytes, conversations: Iterable[str]
) -> dict[str, datetime]:
    """When the person each of these Rasa conversations belongs to was last erased
    (absent: never). A conversation's id is the address of an identity of its person
    (CONVERSATION_KINDS), so its tombstone is found by those addresses' hashes."""
    by_hash = {
        identity_hash(key, kind, conversation): conversation
        for conversation in set(conversations)
        for kind in CONVERSATION_KINDS
    }
    if not by_hash:
        return {}
    rows = await session.execute(
        select(Tombstone.identity_hash, func.max(Tombstone.erased_at))
        .where(Tombstone.identity_hash.in_(by_hash))
        .group_by(Tombstone.identity_hash)
    )
    erased: dict[str, datetime] = {}
    for hashed, at in rows:
        conversation = by_hash[hashed]
        erased[conversation] = max(at, erased.get(conversation, at))
    return erased


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
    messages = await session.scalars(
        select(Message)
        .where(_messages_of([pid], await _addresses(session, [pid])))
        .order_by(Message.id)
    )
    held = await session.scalars(
        select(HeldMessage).where(HeldMessage.profile_id == pid).order_by(HeldMessage.id)
    )
    enrolments = await session.scalars(
        select(Enrolment).where(Enrolment.profile_id == pid).order_by(Enrolment.enrolled_at)
    )
    copies: dict[str, list[dict[str, Any]]] = {}
    for conversation, data in await session.execute(
        select(RasaEvent.sender_id, RasaEvent.data)
        .where(RasaEvent.sender_id.in_(await conversations_of(session, profile)))
        .order_by(RasaEvent.sender_id, RasaEvent.timestamp, RasaEvent.id)
    ):
        copies.setdefault(conversation, []).append(data)
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
        "messages": [_row(m, exclude={"profile_id"}) for m in messages],
        "held_messages": [_row(h, exclude={"profile_id"}) for h in held],
        "enrolments": [_row(e, exclude={"profile_id"}) for e in enrolments],
        # The backend's copy of their conversations' events (scale profile), as Rasa
        # published them, by conversation.
        "rasa_events": copies,
        "changes": [_row(a, exclude={"token_id"}) for a in audit],
    }


async def conversations_of(session: AsyncSession, profile: Profile) -> list[str]:
    """The ids of every Rasa conversation of the person (and of those merged into
    them): their identities' that name one, those their messages were recorded in, their
    hand-offs' and their demos'."""
    ids = await _ids(session, profile)
    found = {
        address
        for kind, address in await session.execute(
            select(Identity.kind, Identity.address).where(Identity.profile_id.in_(ids))
        )
        if kind in CONVERSATION_KINDS
    }
    found |= set(
        await session.scalars(
            select(ConversationRollup.conversation).where(ConversationRollup.profile_id.in_(ids))
        )
    )
    for table in (Handoff, Demo):
        found |= {
            c
            for c in await session.scalars(
                select(table.conversation_id).where(table.profile_id.in_(ids))
            )
            if c
        }
    return sorted(found)


async def transcripts(rasa: RasaClient, conversations: list[str]) -> dict[str, Any]:
    """Each conversation's events as Rasa's tracker store holds them (every session).
    Raises `RasaUnavailable`."""
    return {c: await rasa.conversation_events(c) for c in conversations}


async def erase_conversations(rasa: RasaClient, conversations: list[str]) -> int:
    """Erase each conversation from Rasa's tracker store; how many events went. Raises
    `RasaUnavailable` (erasing again is harmless: an erased conversation has none)."""
    return sum([await rasa.erase_conversation(c) for c in conversations])


async def _ids(session: AsyncSession, profile: Profile) -> list[uuid.UUID]:
    """The profile's id and those of the profiles merged into it."""
    return [
        profile.id,
        *(await session.scalars(select(Profile.id).where(Profile.merged_into_id == profile.id))),
    ]


async def _addresses(session: AsyncSession, ids: list[uuid.UUID]) -> set[str]:
    """The person's addresses that messages carry (phone numbers, web chat sessions)."""
    return set(
        await session.scalars(
            select(Identity.address).where(
                Identity.profile_id.in_(ids),
                Identity.kind.in_([*PHONE_KINDS, IdentityKind.WEB]),
            )
        )
    )


def _messages_of(ids: list[uuid.UUID], addresses: set[str]) -> Any:
    """The person's messages: theirs, and those from or to their addresses that no
    profile held yet (a text from a number before its profile was made)."""
    unowned = Message.profile_id.is_(None) & or_(
        Message.from_address.in_(addresses), Message.to_address.in_(addresses)
    )
    return or_(Message.profile_id.in_(ids), unowned)


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
    """Erase a person from the backend: their profile (and those merged into it),
    identities, events (and their conversations' roll-ups), consent ledger, scores,
    messages (texts and addresses), held messages, enrolments with their queued steps,
    segment memberships, demos and hand-offs, the suppression of their e-mail addresses,
    and the backend's copy of their conversations' events (`rasa_events`).
    (Their conversations in Rasa are erased first: `erase_conversations`.) Returns how
    many identities the tombstone remembers."""
    now = clock.now()
    ids = await _ids(session, profile)
    addresses = await _addresses(session, ids)
    conversations = await conversations_of(session, profile)
    identities = (
        await session.execute(
            select(Identity.kind, Identity.address).where(Identity.profile_id.in_(ids))
        )
    ).all()
    for kind, address in identities:
        session.add(Tombstone(identity_hash=identity_hash(key, kind, address), erased_at=now))
    # Foreign keys cascade on PostgreSQL and (with foreign_keys=ON) on SQLite; deleting
    # explicitly keeps the order obvious and does not depend on either.
    await session.execute(delete(Message).where(_messages_of(ids, addresses)))
    emails = [a for kind, a in identities if kind == IdentityKind.EMAIL.value]
    await session.execute(delete(EmailSuppression).where(EmailSuppression.address.in_(emails)))
    await session.execute(delete(RasaEvent).where(RasaEvent.sender_id.in_(conversations)))
    await session.execute(
        delete(SequenceWork).where(
            SequenceWork.enrolment_id.in_(select(Enrolment.id).where(Enrolment.profile_id.in_(ids)))
        )
    )
    for table in (
        ScoreContribution, ConsentState, ConsentEvent, Event, ConversationRollup, Demo,
        Handoff, HeldMessage, Enrolment, SegmentMember, Identity,
    ):  # fmt: skip
        await session.execute(delete(table).where(table.profile_id.in_(ids)))
    await session.execute(delete(Merge).where(Merge.survivor_id.in_(ids)))
    await session.execute(delete(Profile).where(Profile.id.in_(ids[1:])))
    await session.execute(delete(Profile).where(Profile.id == profile.id))
    await session.flush()
    session.expunge(profile)
    return len(identities)
