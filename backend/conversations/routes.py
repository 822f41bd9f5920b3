"""Conversation routes: a conversation's transcript, read from Rasa's tracker; the list
of conversations and the overview's figures, from the backend's record of them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from backend.api.bodies import query_int, respond
from backend.api.keys import CLOCK, RASA, SESSIONS
from backend.api.problems import Problem
from backend.conversations import activity
from backend.conversations.rasa_client import RasaUnavailable
from backend.conversations.schemas import (
    ConversationList,
    ConversationOut,
    DailyCount,
    OverviewOut,
    Transcript,
    TranscriptLine,
)
from backend.conversations.transcripts import transcript


async def conversation_transcript(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    try:
        events = await request.app[RASA].conversation_events(conversation_id)
    except RasaUnavailable as error:
        raise Problem(
            503, f"The conversation could not be read from Rasa: {error}.",
            type_="rasa-unavailable", headers={"Retry-After": "5"},
        ) from error  # fmt: skip
    lines = [TranscriptLine(**asdict(line)) for line in transcript(events)]
    if not lines:
        raise Problem(
            404, f"There is no conversation {conversation_id!r}.", type_="conversation-not-found"
        )
    return respond(Transcript(conversation_id=conversation_id, lines=lines))


def period(request: web.Request, default_days: int = 30) -> tuple[datetime, datetime]:
    """`since` and `until` from the query (dates, or dates and times with a zone; until
    is exclusive), by default the last `default_days` days to now."""
    now = request.config_dict[CLOCK].now()  # config_dict: the console calls it too

    def read(name: str) -> datetime | None:
        raw = request.query.get(name)
        if not raw:
            return None
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            value = None
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        try:
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), UTC)
        except ValueError:
            raise Problem(
                400, f"query parameter {name!r} must be a date (2026-12-01) or a date and "
                "time with a zone", type_="invalid-query",
            ) from None  # fmt: skip

    until = read("until") or now
    since = read("since") or until - timedelta(days=default_days)
    if since >= until or until - since > timedelta(days=366):
        raise Problem(
            400, "the period must start before it ends and last at most 366 days",
            type_="invalid-query",
        )  # fmt: skip
    return since, until


def filters(request: web.Request) -> activity.Filters:
    since, until = period(request)
    return activity.Filters(
        since=since, until=until, channel=request.query.get("channel") or None,
        intent=request.query.get("intent") or None,
        handed_off=request.query.get("handed_off") in ("true", "1", "on"),
        fell_back=request.query.get("fell_back") in ("true", "1", "on"),
    )  # fmt: skip


async def list_conversations(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 500)
    assert limit is not None
    async with request.app[SESSIONS]() as session:
        rows = await activity.listed(session, filters(request), limit)
    return respond(
        ConversationList(
            items=[
                ConversationOut(
                    conversation_id=r.conversation, channel=r.channel, profile_id=r.profile_id,
                    started=r.started, last=r.last, messages=r.messages, intents=r.intents,
                    fell_back=r.fell_back, handed_off=r.handed_off,
                )
                for r in rows
            ]
        )
    )  # fmt: skip


async def get_overview(request: web.Request) -> web.Response:
    since, until = period(request)
    async with request.app[SESSIONS]() as session:
        figures = await activity.overview(session, since, until)

    def daily(counts: list[int]) -> list[DailyCount]:
        return [DailyCount(day=d, count=n) for d, n in zip(figures.days, counts, strict=True)]

    return respond(
        OverviewOut(
            since=since, until=until, conversations=figures.conversations,
            messages=figures.messages,
            conversations_by_channel={
                c: daily(v) for c, v in figures.conversations_by_channel.items()
            },
            top_intents=figures.top_intents, fallback_rate=figures.fallback_rate,
            handoffs=figures.handoffs, handoff_rate=figures.handoff_rate,
            opt_ins=daily(figures.opt_ins), opt_outs=daily(figures.opt_outs),
            qualified_leads=daily(figures.qualified), demos_booked=daily(figures.demos),
        )
    )  # fmt: skip
