"""`GET /api/v1/audit`: who changed what, newest first."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from backend.api.bodies import query_int, respond
from backend.api.keys import SESSIONS
from backend.api.schemas import AuditOut, AuditPage
from backend.core.models import AuditEntry


async def list_audit(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000)
    before = query_int(request, "before", None, 1, 2**62)
    assert limit is not None
    query = select(AuditEntry)
    if target := request.query.get("target"):
        query = query.where(AuditEntry.target == target)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    async with request.app[SESSIONS]() as session:
        rows = list(await session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
    items = [AuditOut.model_validate(r, from_attributes=True) for r in rows]
    return respond(AuditPage(items=items, next=items[-1].id if len(items) == limit else None))
