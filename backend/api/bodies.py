"""Reading validated request bodies and writing model responses."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from backend.keys import SETTINGS
from backend.problems import Problem, invalid_body

Model = TypeVar("Model", bound=BaseModel)

MAX_BODY_BYTES = 1024 * 1024


async def read_body(request: web.Request, model: type[Model]) -> Model:
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
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Problem(400, f"The body is not valid JSON: {error}", type_="invalid-json") from error
    context = {"default_phone_region": request.app[SETTINGS].default_phone_region}
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        raise invalid_body(error) from error


def respond(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        status=status, text=model.model_dump_json(), content_type="application/json"
    )
