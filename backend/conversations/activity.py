"""What happened in conversations, as the backend's record of them says: every message a
person sent is an `intent_expressed` event carrying its channel and conversation
(message_rules.rasa_events). From those, the list of conversations with their channel,
intents, fallbacks and hand-offs, and the overview's figures per day.

These read the backend's tables only (events, hand-offs, the consent ledger), never
Rasa's tracker store: a conversation's words are read from Rasa one at a time, when
someone opens it."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import String, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.json_sql import json_text
from backend.core.models import ConsentEvent, Event, Handoff

INTENT_EXPRESSED = "intent_expressed"
FALLBACK = "nlu_fallback"
QUALIFIED = "lead_qualified"
DEMO_BOOKED = "demo_booked"


@dataclass(frozen=True)
class Filters:
    since: datetime
    until: datetime
    channel: str | None = None
    intent: str | None = None
    handed_off: bool = False
    fell_back: bool = False


@dataclass
class ConversationSummary:
    conversation: str
    channel: str
    profile_id: uuid.UUID
    started: datetime
    last: datetime
    messages: int
    intents: list[str] = field(default_factory=list)
    fell_back: bool = False
    handed_off: bool = False


def _conversation() -> json_text:
    return json_text(Event.properties, "conversation")


async def listed(session: AsyncSession, filters: Filters, limit: int) -> list[ConversationSummary]:
    """Conversations with a message in the period, latest first, that pass the filters:
    grouped in the database, at most `limit` of them, then their intents and hand-offs
    read for those alone (never a list of every conversation in a query)."""
    conversation = _conversation().label("conversation")
    channel = json_text(Event.properties, "channel")
    intent = json_text(Event.properties, "intent")
    in_period = (
        Event.type == INTENT_EXPRESSED,
        Event.occurred_at >= filters.since,
        Event.occurred_at < filters.until,
    )
    fallbacks = func.sum(case((intent == FALLBACK, 1), else_=0))
    query = (
        select(
            conversation, func.max(channel), func.min(cast(Event.profile_id, String)),
            func.min(Event.occurred_at), func.max(Event.occurred_at), func.count(), fallbacks,
        )
        .where(*in_period, _conversation().is_not(None))
        .group_by(conversation)
        .order_by(func.max(Event.occurred_at).desc())
        .limit(limit)
    )  # fmt: skip
    if filters.channel:
        query = query.where(channel == filters.channel)
    if filters.intent:
        query = query.where(
            _conversation().in_(select(_conversation()).where(*in_period, intent == filters.intent))
        )
    if filters.handed_off:
        query = query.where(_conversation().in_(select(Handoff.conversation_id)))
    if filters.fell_back:
        query = query.having(fallbacks > 0)
    found = {
        conv: ConversationSummary(
            conv, chan or "rest", uuid.UUID(str(profile)), first, last, n, [], bool(fell)
        )
        for conv, chan, profile, first, last, n, fell in await session.execute(query)
    }
    if found:
        said, which = intent.label("said"), _conversation().label("which")
        for conv, name in await session.execute(
            select(which, said)
            .where(*in_period, _conversation().in_(list(found)))
            .group_by(which, said)
            .order_by(func.min(Event.occurred_at))
        ):
            if conv in found and name:
                found[conv].intents.append(name)
        for conv in await session.scalars(
            select(Handoff.conversation_id).where(Handoff.conversation_id.in_(list(found)))
        ):
            found[conv].handed_off = True
    return list(found.values())


@dataclass
class Overview:
    days: list[date]
    conversations_by_channel: dict[str, list[int]]  # channel -> per day
    messages: int
    conversations: int
    top_intents: list[tuple[str, int]]
    fallback_rate: float | None  # of messages
    handoffs: int
    handoff_rate: float | None  # of conversations
    opt_ins: list[int]  # per day
    opt_outs: list[int]
    qualified: list[int]
    demos: list[int]


async def overview(session: AsyncSession, since: datetime, until: datetime) -> Overview:
    """The period's figures, per day (UTC) where a chart wants them."""
    days = [since.date()]
    while (following := date.fromordinal(days[-1].toordinal() + 1)) < until.date():
        days.append(following)
    if until.time() != datetime.min.time() and until.date() not in days:
        days.append(until.date())
    index: dict[date | None, int] = {d: i for i, d in enumerate(days)}
    per_day = func.date(Event.occurred_at)
    in_period = (Event.occurred_at >= since, Event.occurred_at < until)

    by_channel: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    conversations: set[str] = set()
    for day, chan, conv in await session.execute(
        select(per_day, json_text(Event.properties, "channel"), _conversation())
        .where(Event.type == INTENT_EXPRESSED, *in_period)
        .distinct()
    ):
        slot = index.get(_as_date(day))
        if slot is not None and conv is not None:
            by_channel[chan or "rest"][slot] += 1
            conversations.add(conv)
    # Grouped by the label: PostgreSQL does not see two renderings of the same JSON
    # read (each with its own parameters) as one expression.
    said = json_text(Event.properties, "intent").label("said")
    intents = Counter(
        {
            name: n
            for name, n in await session.execute(
                select(said, func.count())
                .where(Event.type == INTENT_EXPRESSED, *in_period)
                .group_by(said)
            )
            if name
        }
    )
    messages = sum(intents.values())
    handoffs = (
        await session.scalar(
            select(func.count()).where(Handoff.opened_at >= since, Handoff.opened_at < until)
        )
        or 0
    )

    async def daily(kind: str) -> list[int]:
        counts = [0] * len(days)
        for day, n in await session.execute(
            select(per_day, func.count()).where(Event.type == kind, *in_period).group_by(per_day)
        ):
            if (slot := index.get(_as_date(day))) is not None:
                counts[slot] = n
        return counts

    opt_ins, opt_outs = [0] * len(days), [0] * len(days)
    consent_day = func.date(ConsentEvent.occurred_at)
    for day, action, n in await session.execute(
        select(consent_day, ConsentEvent.action, func.count())
        .where(
            ConsentEvent.purpose == "marketing",
            ConsentEvent.pending.is_(False),
            ConsentEvent.occurred_at >= since,
            ConsentEvent.occurred_at < until,
        )
        .group_by(consent_day, ConsentEvent.action)
    ):
        if (slot := index.get(_as_date(day))) is not None:
            (opt_ins if action == "grant" else opt_outs)[slot] += n
    return Overview(
        days=days, conversations_by_channel=dict(by_channel), messages=messages,
        conversations=len(conversations), top_intents=intents.most_common(10),
        fallback_rate=intents[FALLBACK] / messages if messages else None,
        handoffs=handoffs,
        handoff_rate=handoffs / len(conversations) if conversations else None,
        opt_ins=opt_ins, opt_outs=opt_outs,
        qualified=await daily(QUALIFIED), demos=await daily(DEMO_BOOKED),
    )  # fmt: skip


def _as_date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    return None
