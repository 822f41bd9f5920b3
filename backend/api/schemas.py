"""Bodies every part of the API shares: problems, health, the audit log.

Each package's `schemas.py` holds its own routes' bodies. The same pydantic models
validate requests, serialise responses and generate the OpenAPI document
(backend.api.openapi), so the three cannot drift apart."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
)


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """Audit entries, newest first; pass `next` as `before` for the page after."""

    items: list[AuditOut]
    next: int | None


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, str]] | None = None
    merged_into: uuid.UUID | None = None
