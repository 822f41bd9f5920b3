"""Roll-ups of the messages people sent, kept as each one is recorded, so that the
conversations list and the overview read a page of conversations and a few hundred
daily counts instead of grouping a month of messages on every request (at 1,000,000
profiles, 701,204 messages a month: 2.6 to 9.9 s a page without them; see
docs/benchmarks.md).

Every `intent_expressed` event that names its conversation (message_rules.rasa_events
puts the channel and conversation in it) is added, in the transaction that stores it
(backend.events.recording.ingest), to:

- `conversation_rollups`: one row per conversation: its person, channel (that of its
  first recorded message), first and last message, messages and fallbacks;
- `conversation_intent_rollups`: per conversation and intent, how often and since when;
- `conversation_day_rollups`: the days (UTC) on which the conversation had a message;
- `daily_channel_rollups`: per day and channel, the conversations with a message that
  day (a conversation's first message of a day adds one);
- `daily_intent_rollups`: per day, channel and intent, the messages.

An event is stored once (its idempotency key), so it is added once. Counts are added
by upserts in key order: two transactions adding to the same conversation or day wait
for each other rather than deadlock. Events without a conversation (from bots older
than the conversation property, or posted to the events API without one) are not
rolled up. Migration 0016 built these from the events recorded before it.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import case
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.models import (
    ConversationDayRollup,
    ConversationIntentRollup,
    ConversationRollup,
    DailyChannelRollup,
    DailyIntentRollup,
)

INTENT_EXPRESSED = "intent_expressed"
FALLBACK = "nlu_fallback"
DEFAULT_CHANNEL = "rest"  # Rasa's REST channel, which says no channel of its own
MAX_CONVERSATION, MAX_CHANNEL, MAX_INTENT = 320, 32, 200


@dataclass(frozen=True)
class Said:
    """A message a person sent, as the roll-ups count it."""

    conversation: str
    profile_id: uuid.UUID
    channel: str
    intent: str | None
    at: datetime

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()


def said(
    profile_id: uuid.UUID, type_: str, properties: Mapping[str, Any], at: datetime
) -> Said | None:
    """The message an event records, or None for an event that is not one (or names no
    conversation)."""
    if type_ != INTENT_EXPRESSED:
        return None
    conversation = properties.get("conversation")
    if not isinstance(conversation, str) or not 0 < len(conversation) <= MAX_CONVERSATION:
        return None
    channel = properties.get("channel")
    if not isinstance(channel, str) or not 0 < len(channel) <= MAX_CHANNEL:
        channel = DEFAULT_CHANNEL
    intent = properties.get("intent")
    if not isinstance(intent, str) or not 0 < len(intent) <= MAX_INTENT:
        intent = None
    return Said(conversation, profile_id, channel, intent, at)


async def add(session: AsyncSession, messages: Iterable[Said]) -> None:
    """Add messages to the roll-ups, in the caller's transaction."""
    messages = list(messages)
    if not messages:
        return
    upsert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert

    conversations: dict[str, dict[str, Any]] = {}
    for m in messages:
        row = conversations.setdefault(
            m.conversation,
            {"conversation": m.conversation, "profile_id": m.profile_id, "channel": m.channel,
             "started_at": m.at, "last_at": m.at, "messages": 0, "fallbacks": 0},
        )  # fmt: skip
        if m.at < row["started_at"]:
            row.update(started_at=m.at, channel=m.channel)
        row["last_at"] = max(row["last_at"], m.at)
        row["messages"] += 1
        row["fallbacks"] += m.intent == FALLBACK
    table = ConversationRollup
    statement = upsert(table)
    new = statement.excluded
    upserted = statement.on_conflict_do_update(
        index_elements=[table.conversation],
        set_={
            "started_at": case(
                (new.started_at < table.started_at, new.started_at), else_=table.started_at
            ),
            "last_at": case((new.last_at > table.last_at, new.last_at), else_=table.last_at),
            "messages": table.messages + new.messages,
            "fallbacks": table.fallbacks + new.fallbacks,
        },
    ).returning(table.conversation, table.id, table.channel)
    found = {
        conversation: (row_id, channel)
        for conversation, row_id, channel in await session.execute(
            upserted, [conversations[c] for c in sorted(conversations)]
        )
    }

    intents: dict[tuple[int, str], dict[str, Any]] = {}
    days: set[tuple[int, date]] = set()
    daily: dict[tuple[date, str, str], int] = defaultdict(int)
    for m in messages:
        row_id, channel = found[m.conversation]
        days.add((row_id, m.day))
        daily[(m.day, channel, m.intent or "")] += 1
        if m.intent is None:
            continue
        row = intents.setdefault(
            (row_id, m.intent),
            {"conversation_id": row_id, "intent": m.intent, "first_at": m.at, "messages": 0},
        )
        row["first_at"] = min(row["first_at"], m.at)
        row["messages"] += 1

    if intents:
        table_i = ConversationIntentRollup
        statement = upsert(table_i)
        new = statement.excluded
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[table_i.conversation_id, table_i.intent],
                set_={
                    "first_at": case(
                        (new.first_at < table_i.first_at, new.first_at), else_=table_i.first_at
                    ),
                    "messages": table_i.messages + new.messages,
                },
            ),
            [intents[key] for key in sorted(intents)],
        )

    # A conversation's first message of a day counts it on that day: the day rows that
    # are new say which.
    first_of_day = (
        upsert(ConversationDayRollup)
        .on_conflict_do_nothing()
        .returning(ConversationDayRollup.conversation_id, ConversationDayRollup.day)
    )
    channel_of = {row_id: channel for row_id, channel in found.values()}
    per_channel: dict[tuple[date, str], int] = defaultdict(int)
    for row_id, day in await session.execute(
        first_of_day, [{"conversation_id": c, "day": d} for c, d in sorted(days)]
    ):
        per_channel[(day, channel_of[row_id])] += 1

    if per_channel:
        table_c = DailyChannelRollup
        statement = upsert(table_c)
        await session.execute(
            statement.on_conflict_do_update(
                index_elements=[table_c.day, table_c.channel],
                set_={"conversations": table_c.conversations + statement.excluded.conversations},
            ),
            [
                {"day": day, "channel": channel, "conversations": n}
                for (day, channel), n in sorted(per_channel.items())
            ],
        )
    table_d = DailyIntentRollup
    statement = upsert(table_d)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[table_d.day, table_d.channel, table_d.intent],
            set_={"messages": table_d.messages + statement.excluded.messages},
        ),
        [
            {"day": day, "channel": channel, "intent": intent, "messages": n}
            for (day, channel, intent), n in sorted(daily.items())
        ],
    )
