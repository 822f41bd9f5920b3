"""The marketer's segment pages: every segment with its live count, and an editor where
a rule is written in the same YAML as `data/segments/*.yml`, checked as those files are
(mistakes named at their line), counted and sampled live as it changes, and saved as an
API segment (backend.segments.store, as the API saves one) or downloaded as the file to
put in `data/segments/`.

Segments defined by files stay the files' to change: the editor shows and counts them,
and its download is the file to edit."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml
from aiohttp import web
from sqlalchemy import select

from backend import data_files
from backend.api.keys import CLOCK, SCORING, SESSIONS
from backend.api.permissions import allowed
from backend.api.problems import Problem
from backend.api.tokens import Role
from backend.console.pages import USER, render
from backend.core import audit
from backend.core.models import Profile, Segment
from backend.segments import store as segment_store
from backend.segments.rules import SegmentDefinition, where_clause

SAMPLE = 10
NAME_PATTERN = r"[a-z0-9][a-z0-9\-]{0,63}"
EXAMPLE = """description: Leads worth a call this week.
rule:
  all:
    - {field: score, op: gte, value: 40}
    - {event: pricing_viewed, within_days: 7}
"""


async def segments(request: web.Request) -> web.Response:
    async with request.config_dict[SESSIONS]() as db:
        rows = await segment_store.all_segments(db)
    return render(
        request, "segments.html", section="segments", rows=rows,
        may_edit=allowed("create_segment", Role(request[USER].role)),
        notice=request.query.get("notice"),
    )  # fmt: skip


async def segment_count(request: web.Request) -> web.Response:
    async with request.config_dict[SESSIONS]() as db:
        segment = await _segment(db, request.match_info["name"])
        total = await segment_store.count(db, segment_store.rule_of(segment), _context(request))
    return web.Response(text=f"{total:,}", content_type="text/html")


async def editor(request: web.Request) -> web.Response:
    name = request.match_info.get("name")
    text, source = EXAMPLE, "api"
    if name is not None:
        async with request.config_dict[SESSIONS]() as db:
            segment = await _segment(db, name)
        text, source = _as_yaml(segment), segment.source
    return render(
        request, "segment.html", section="segments", name=name or "", text=text,
        source=source, mistakes=[], pattern=NAME_PATTERN,
        may_edit=allowed("create_segment", Role(request[USER].role)) and source == "api",
    )  # fmt: skip


async def new_segment(request: web.Request) -> web.Response:
    return await editor(request)


async def preview(request: web.Request) -> web.Response:
    """The count and a sample of the members of the rule in the editor, or its mistakes."""
    form = await request.post()
    try:
        definition = _checked(str(form.get("name") or "preview"), str(form.get("text", "")))
    except data_files.DataFileInvalid as invalid:
        return render(request, "_segment_preview.html", mistakes=invalid.mistakes)
    context = _context(request)
    async with request.config_dict[SESSIONS]() as db:
        total = await segment_store.count(db, definition.rule, context)
        sample = list(
            await db.scalars(
                select(Profile).where(where_clause(definition.rule, context)).limit(SAMPLE)
            )
        )
    return render(request, "_segment_preview.html", mistakes=[], total=total, sample=sample)


async def save(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    name, text = str(form.get("name", "")).strip(), str(form.get("text", ""))
    try:
        definition = _checked(name, text)
    except data_files.DataFileInvalid as invalid:
        return render(
            request, "segment.html", section="segments", name=name, text=text, source="api",
            mistakes=invalid.mistakes, may_edit=True, pattern=NAME_PATTERN, http_status=422,
        )  # fmt: skip
    clock = request.config_dict[CLOCK]
    async with request.config_dict[SESSIONS].begin() as db:
        try:
            _, created = await segment_store.save(
                db, definition.name, definition.description, definition.rule, clock.now()
            )
        except segment_store.SegmentConflict as conflict:
            raise Problem(409, str(conflict), type_="segment-from-file") from conflict
        action = "create_segment" if created else "replace_segment"
        await audit.record(db, clock, request[USER], action, definition.name)
    raise web.HTTPSeeOther(
        "/console/segments?" + urlencode({"notice": f"Saved segment {definition.name}."})
    )


async def download(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    async with request.config_dict[SESSIONS]() as db:
        segment = await _segment(db, name)
    return web.Response(
        text=_as_yaml(segment), content_type="application/yaml",
        headers={"Content-Disposition": f'attachment; filename="{name}.yml"'},
    )  # fmt: skip


def _checked(name: str, text: str) -> SegmentDefinition:
    """The segment in `text`, checked as data/segments/<name>.yml is at start-up."""
    path = Path("data/segments") / f"{name or 'unnamed'}.yml"
    return data_files.read_text(text, path, SegmentDefinition, lambda _: {"name": name})


def _as_yaml(segment: Segment) -> str:
    document: dict[str, Any] = {}
    if segment.description:
        document["description"] = segment.description
    document["rule"] = segment.rule
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


async def _segment(db: Any, name: str) -> Segment:
    segment = await segment_store.get(db, name)
    if segment is None:
        raise Problem(404, f"There is no segment {name!r}.", type_="segment-not-found")
    return segment


def _context(request: web.Request) -> Any:
    return request.config_dict[SCORING].context(request.config_dict[CLOCK].now())
