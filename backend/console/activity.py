"""The marketer's conversation list and overview: what backend.conversations.activity
reads from the backend's record, the same figures as GET /api/v1/conversations and
GET /api/v1/overview, as a filterable table and as charts."""

from __future__ import annotations

import json
from datetime import timedelta

from aiohttp import web

from backend.api.keys import SESSIONS
from backend.api.problems import Problem
from backend.console.pages import render
from backend.conversations import activity
from backend.conversations.routes import filters, period

CHANNELS = ("sms", "webchat", "voice", "alexa", "rest")


async def conversations(request: web.Request) -> web.Response:
    try:
        chosen = filters(request)
    except Problem as problem:
        return render(
            request, "conversations.html", section="conversations", rows=[], form=request.query,
            channels=CHANNELS, error=problem.detail, http_status=400,
        )  # fmt: skip
    async with request.config_dict[SESSIONS]() as db:
        rows = await activity.listed(db, chosen, 200)
    form = {
        **request.query,
        "since": request.query.get("since") or chosen.since.date().isoformat(),
        "until": request.query.get("until") or "",
    }
    return render(
        request, "conversations.html", section="conversations", rows=rows, form=form,
        channels=CHANNELS, error=None,
    )  # fmt: skip


async def overview(request: web.Request) -> web.Response:
    days = {"7": 7, "30": 30, "90": 90}.get(request.query.get("days", "30"), 30)
    try:
        since, until = period(request, default_days=days)
    except Problem as problem:
        raise Problem(400, problem.detail, type_="invalid-query") from problem
    async with request.config_dict[SESSIONS]() as db:
        figures = await activity.overview(db, since, until)
    charts = {
        "days": [d.isoformat() for d in figures.days],
        "channels": figures.conversations_by_channel,
        "intents": figures.top_intents,
        "opt_ins": figures.opt_ins,
        "opt_outs": figures.opt_outs,
        "qualified": figures.qualified,
        "demos": figures.demos,
    }
    return render(
        request, "overview.html", section="overview", figures=figures, since=since,
        until=until - timedelta(seconds=1), days=days, charts=json.dumps(charts),
    )  # fmt: skip
