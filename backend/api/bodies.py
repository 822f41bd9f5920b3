"""Reading validated request bodies and writing model responses."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.api import bounded_json
from backend.api.keys import SETTINGS
from backend.api.problems import Problem, invalid_body

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")

MAX_BODY_BYTES = 1024 * 1024


async def read_json(request: web.Request) -> Any:
    """The request's JSON body, or a problem saying why there is none. Every JSON route
    reads its body here, within the bounds of `bounded_json` (depth, number size)."""
    if request.content_type != "application/json":
        raise Problem(
            415,
            f"Send JSON with 'Content-Type: application/json', not {request.content_type!r}.",
            type_="unsupported-media-type",
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise Problem(413, "The body is larger than 1 MiB.", type_="body-too-large") from error
    try:
        return bounded_json.parse(raw)
    except bounded_json.UnacceptableJson as error:
        raise Problem(
            400, f"The body is not JSON Parley accepts: {error}.", type_="invalid-json"
        ) from None


async def read_body(request: web.Request, model: type[Model]) -> Model:
    return await read_body_as(request, _adapter(model))


async def read_body_as(request: web.Request, adapter: TypeAdapter[T]) -> T:
    data = await read_json(request)
    context = {"default_phone_region": request.app[SETTINGS].default_phone_region}
    try:
        return adapter.validate_python(data, context=context)
    except ValidationError as error:
        raise invalid_body(error) from error


@functools.cache
def _adapter(model: type[Model]) -> TypeAdapter[Model]:
    return TypeAdapter(model)


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=model.model_dump_json(), content_type="application/json"
    )


def path_uuid(request: web.Request, name: str, not_found: Problem) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise not_found from None


async def row_by_id(
    request: web.Request, session: AsyncSession, model: type[T], noun: str, type_: str
) -> T:
    """The `model` row whose id is the path's `{id}`, else 404 `type_`."""
    missing = Problem(404, f"There is no {noun} {request.match_info['id']!r}.", type_=type_)
    row = await session.get(model, path_uuid(request, "id", missing))
    if row is None:
        raise missing
    return row


def query_uuid(request: web.Request, name: str) -> uuid.UUID | None:
    """An id in the query (e.g. `after`, a page's last profile), else 400 invalid-query."""
    raw = request.query.get(name)
    try:
        return uuid.UUID(raw) if raw else None
    except ValueError:
        raise Problem(
            400, f"query parameter '{name}' must be an id (a UUID)", type_="invalid-query"
        ) from None


def query_int(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise Problem(
            400,
            f"query parameter {name!r} must be a whole number from {low} to {high}",
            type_="invalid-query",
        )
    return value


def query_choice(request: web.Request, name: str, choices: Iterable[str]) -> str:
    options = list(choices)
    value = request.query.get(name, "")
    if value not in options:
        raise Problem(
            400,
            f"query parameter {name!r} must be one of {', '.join(options)}",
            type_="invalid-query",
        )
    return value
