"""What happened in conversations, as the backend's record of them says: every message a
person sent is an `intent_expressed` event carrying its channel and conversation
(message_rules.rasa_events), added up as it is recorded (backend.conversations.rollups).
From those roll-ups, the list of conversations with their channel, intents, fallbacks
and hand-offs, and the overview's figures per day (UTC); from hand-offs, the consent
ledger and the events, the rest of the overview.

These read the backend's tables only, never Rasa's tracker store: a conversation's
words are read from Rasa one at a time, when someone opens it."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.conversations.rollups import FALLBACK
from backend.core.models import (
    ConsentEvent,
    ConversationDayRollup,
    ConversationIntentRollup,
    ConversationRollup,
    DailyChannelRollup,
    DailyIntentRollup,
    Event,
    Handoff,
)
from backend.core.sql_dates import utc_day

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


def _days(since: datetime, until: datetime) -> tuple[date, date]:
    """The first and last UTC day of a period (`until` exclusive)."""
    return since.date(), (until - timedelta(microseconds=1)).date()


async def listed(session: AsyncSession, filters: Filters, limit: int) -> list[ConversationSummary]:
    """Conversations with a message in the period (to the day), latest first, that pass
    the filters, at most `limit` of them, each with its whole figures: one roll-up row
    per conversation, then the intents and hand-offs of those alone."""
    c = ConversationRollup
    first_day, last_day = _days(filters.since, filters.until)
    active_then = (
        select(ConversationDayRollup.conversation_id)
        .where(
            ConversationDayRollup.conversation_id == c.id,
            ConversationDayRollup.day >= first_day,
            ConversationDayRollup.day <= last_day,
        )
        .exists()
    )
    query = (
        select(c)
        .where(c.last_at >= filters.since, c.started_at < filters.until, active_then)
        .order_by(c.last_at.desc(), c.id.desc())
        .limit(limit)
    )
    if filters.channel:
        query = query.where(c.channel == filters.channel)
    if filters.intent:
        query = query.where(
            select(ConversationIntentRollup.conversation_id)
            .where(
                ConversationIntentRollup.conversation_id == c.id,
                ConversationIntentRollup.intent == filters.intent,
            )
            .exists()
        )
    if filters.handed_off:
        query = query.where(c.conversation.in_(select(Handoff.conversation_id)))
    if filters.fell_back:
        query = query.where(c.fallbacks > 0)
    rows = list(await session.scalars(query))
    found = {
        r.id: ConversationSummary(
            r.conversation, r.channel, r.profile_id, r.started_at, r.last_at, r.messages,
            [], r.fallbacks > 0,
        )
        for r in rows
    }  # fmt: skip
    if found:
        i = ConversationIntentRollup
        for row_id, name in await session.execute(
            select(i.conversation_id, i.intent)
            .where(i.conversation_id.in_(list(found)))
            .order_by(i.first_at, i.intent)
        ):
            found[row_id].intents.append(name)
        by_name = {summary.conversation: summary for summary in found.values()}
        for conversation in await session.scalars(
            select(Handoff.conversation_id).where(Handoff.conversation_id.in_(list(by_name)))
        ):
            by_name[conversation].handed_off = True
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
    """The period's figures, per day (UTC) where a chart wants them. Messages and
    conversations are counted by whole days (the roll-ups' grain); hand-offs, opt-ins,
    opt-outs, qualified leads and demos by the period's exact bounds."""
    first_day, last_day = _days(since, until)
    days = [date.fromordinal(n) for n in range(first_day.toordinal(), last_day.toordinal() + 1)]
    index: dict[date | None, int] = {d: i for i, d in enumerate(days)}

    by_channel: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for day, channel, n in await session.execute(
        select(DailyChannelRollup.day, DailyChannelRollup.channel, DailyChannelRollup.conversations)
        .where(DailyChannelRollup.day >= first_day, DailyChannelRollup.day <= last_day)
    ):  # fmt: skip
        if (slot := index.get(_as_date(day))) is not None:
            by_channel[channel][slot] += n
    conversations = (
        await session.scalar(
            select(func.count(distinct(ConversationDayRollup.conversation_id))).where(
                ConversationDayRollup.day >= first_day, ConversationDayRollup.day <= last_day
            )
        )
        or 0
    )
    said: Counter[str] = Counter()
    for name, n in await session.execute(
        select(DailyIntentRollup.intent, func.sum(DailyIntentRollup.messages))
        .where(DailyIntentRollup.day >= first_day, DailyIntentRollup.day <= last_day)
        .group_by(DailyIntentRollup.intent)
    ):
        said[name] += int(n)
    messages = sum(said.values())
    intents = Counter({name: n for name, n in said.items() if name})
    handoffs = (
        await session.scalar(
            select(func.count()).where(Handoff.opened_at >= since, Handoff.opened_at < until)
        )
        or 0
    )

    async def daily(kind: str) -> list[int]:
        counts = [0] * len(days)
        per_day = utc_day(Event.occurred_at).label("day")
        for day, n in await session.execute(
            select(per_day, func.count())
            .where(Event.type == kind, Event.occurred_at >= since, Event.occurred_at < until)
            .group_by(per_day)
        ):
            if (slot := index.get(_as_date(day))) is not None:
                counts[slot] = n
        return counts

    opt_ins, opt_outs = [0] * len(days), [0] * len(days)
    consent_day = utc_day(ConsentEvent.occurred_at).label("day")
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
        conversations=conversations, top_intents=intents.most_common(10),
        fallback_rate=said[FALLBACK] / messages if messages else None,
        handoffs=handoffs,
        handoff_rate=handoffs / conversations if conversations else None,
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
