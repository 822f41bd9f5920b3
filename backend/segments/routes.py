"""Segment routes: define segments, count them, page through members, test membership,
and preview a rule before saving it."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from backend.api.bodies import query_int, query_uuid, read_body, respond
from backend.api.keys import CALLER, CLOCK, SCORING, SESSIONS
from backend.api.problems import Problem
from backend.core import audit
from backend.core.models import Segment
from backend.people.routes import live_profile, profile_out
from backend.segments import store as segment_store
from backend.segments.rules import Context
from backend.segments.schemas import (
    MemberPage,
    Membership,
    RulePreview,
    SegmentCount,
    SegmentIn,
    SegmentList,
    SegmentOut,
    SegmentUpdate,
)
from backend.segments.store import SegmentConflict


def _out(segment: Segment) -> SegmentOut:
    return SegmentOut.model_validate(segment, from_attributes=True)


def _context(request: web.Request) -> Context:
    return request.app[SCORING].context(request.app[CLOCK].now())


async def _segment(request: web.Request, session: AsyncSession) -> Segment:
    name = request.match_info["name"]
    segment = await segment_store.get(session, name)
    if segment is None:
        raise Problem(404, f"There is no segment {name!r}.", type_="segment-not-found")
    return segment


async def list_segments(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        segments = await segment_store.all_segments(session)
        return respond(SegmentList(items=[_out(s) for s in segments]))


async def create_segment(request: web.Request) -> web.Response:
    body = await read_body(request, SegmentIn)
    async with request.app[SESSIONS].begin() as session:
        try:
            segment = await segment_store.create(
                session, body.name, body.description, body.rule, request.app[CLOCK].now()
            )
        except SegmentConflict as conflict:
            raise Problem(409, str(conflict), type_="segment-exists") from conflict
        await audit.record(
            session, request.app[CLOCK], request[CALLER], "create_segment", body.name
        )
        return respond(_out(segment), status=201)


async def get_segment(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        return respond(_out(await _segment(request, session)))


async def _editable_segment(request: web.Request, session: AsyncSession) -> Segment:
    segment = await _segment(request, session)
    try:
        segment_store.ensure_editable(segment)
    except SegmentConflict as conflict:
        raise Problem(409, str(conflict), type_="segment-from-file") from conflict
    return segment


async def replace_segment(request: web.Request) -> web.Response:
    body = await read_body(request, SegmentUpdate)
    async with request.app[SESSIONS].begin() as session:
        segment = await _editable_segment(request, session)
        segment.description = body.description
        segment.rule = segment_store.rule_json(body.rule)
        segment.updated_at = request.app[CLOCK].now()
        await audit.record(
            session, request.app[CLOCK], request[CALLER], "replace_segment", segment.name
        )
        return respond(_out(segment))


async def delete_segment(request: web.Request) -> web.Response:
    async with request.app[SESSIONS].begin() as session:
        segment = await _editable_segment(request, session)
        await session.delete(segment)
        await audit.record(
            session, request.app[CLOCK], request[CALLER], "delete_segment", segment.name
        )
    return web.Response(status=204)


async def count_segment(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        segment = await _segment(request, session)
        context = _context(request)
        total = await segment_store.count(session, segment_store.rule_of(segment), context)
    return respond(SegmentCount(count=total, at=context.now))


async def segment_members(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    assert limit is not None
    after = query_uuid(request, "after")
    async with request.app[SESSIONS]() as session:
        segment = await _segment(request, session)
        rows = await segment_store.members(
            session, segment_store.rule_of(segment), _context(request), limit, after
        )
        items = [profile_out(request, p) for p in rows]
    return respond(MemberPage(items=items, next=items[-1].id if len(items) == limit else None))


async def segment_membership(request: web.Request) -> web.Response:
    async with request.app[SESSIONS]() as session:
        segment = await _segment(request, session)
        profile = await live_profile(request, session)
        member = await segment_store.is_member(
            session, segment_store.rule_of(segment), _context(request), profile.id
        )
    return respond(Membership(segment=segment.name, profile_id=profile.id, member=member))


async def preview_rule(request: web.Request) -> web.Response:
    body = await read_body(request, RulePreview)
    context = _context(request)
    async with request.app[SESSIONS]() as session:
        total = await segment_store.count(session, body.rule, context)
    return respond(SegmentCount(count=total, at=context.now))
