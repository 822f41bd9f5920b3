"""The marketer's sequence pages: every sequence with its status and totals, putting one
on hold and resuming it (backend.sequences.holds, as the API does), and one sequence's
funnel per step and each A/B variant's lift over the holdout with its interval, as
charts (Chart.js) and as tables."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy import select

from backend.api.keys import CLOCK, SEQUENCES, SESSIONS
from backend.api.permissions import allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.console.pages import USER, render
from backend.core.models import SequenceHold
from backend.sequences import holds
from backend.sequences import results as sequence_results
from backend.sequences.definition import SequenceDefinition, named

# The funnel chart's series: label, and the step's figure.
FUNNEL = (
    ("Reached the step", "assigned"),
    ("Sent", "sent"),
    ("Delivered", "delivered"),
    ("Replied", "replied"),
    ("Reached the goal", "goal_reached"),
)


async def sequences(request: web.Request) -> web.Response:
    async with request.config_dict[SESSIONS]() as db:
        on_hold = {h.sequence: h for h in await db.scalars(select(SequenceHold))}
        rows = [
            {
                "sequence": s,
                "hold": on_hold.get(s.name),
                "totals": (await sequence_results.results(db, s, None)).totals,
            }
            for s in request.config_dict[SEQUENCES]
        ]
    return render(
        request, "sequences.html", section="sequences", rows=rows,
        may_hold=allowed("hold_sequence", Role(request[USER].role)),
    )  # fmt: skip


async def sequence(request: web.Request) -> web.Response:
    found = _sequence(request)
    async with request.config_dict[SESSIONS]() as db:
        results = await sequence_results.results(db, found, None)
        hold = await db.get(SequenceHold, found.name)
    charts = {
        "funnel": {
            "steps": [step.id for step in results.steps],
            "series": {
                label: [getattr(step, field) or 0 for step in results.steps]
                for label, field in FUNNEL
            },
        },
        "lift": [
            {"label": f"{step.id}: {arm.name}", "difference": arm.lift.difference,
             "low": arm.lift.low, "high": arm.lift.high}
            for step in results.steps
            for arm in step.arms
            if arm.lift is not None
        ],
    }  # fmt: skip
    return render(
        request, "sequence.html", section="sequences", sequence=found, results=results,
        hold=hold, charts=json.dumps(charts),
        may_hold=allowed("hold_sequence", Role(request[USER].role)),
    )  # fmt: skip


async def hold(request: web.Request) -> web.StreamResponse:
    return await _change(request, holds.hold)


async def resume(request: web.Request) -> web.StreamResponse:
    return await _change(request, holds.resume)


async def _change(request: web.Request, change: Any) -> web.StreamResponse:
    found = _sequence(request)
    async with request.config_dict[SESSIONS].begin() as db:
        await change(db, request.config_dict[CLOCK], found.name, request[USER])
    back = str((await request.post()).get("back", ""))
    raise web.HTTPSeeOther(back if back.startswith("/console/") else "/console/sequences")


def _sequence(request: web.Request) -> SequenceDefinition:
    name = request.match_info["name"]
    found = named(request.config_dict[SEQUENCES], name)
    if found is None:
        raise Problem(404, f"There is no sequence {name!r}.", type_="sequence-not-found")
    return found
