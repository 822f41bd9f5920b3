"""The OpenAPI 3.1 document, generated from the route table and its pydantic models, and
the interactive reference on it (Swagger UI, served by the console's static files)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from backend.api.keys import DOCS_PAGE, OPENAPI
from backend.api.permissions import PERMISSIONS, PUBLIC
from backend.api.schemas import ProblemOut

if TYPE_CHECKING:
    from backend.api.route_table import Route

REF = "#/components/schemas/{model}"
DESCRIPTION = (
    "JSON over HTTP. Every route but the public ones needs an API token "
    "(`parley token create --role ROLE`) as `Authorization: Bearer <token>`: press "
    "**Authorize** to give one to this page, then **Try it out** on any route. Each route "
    "says which roles may call it. Every error is an RFC 9457 problem "
    "(`application/problem+json`) whose `type` is `urn:parley:problem:<what went wrong>`; "
    "the types and what each means are listed in docs/api.md."
)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def document(routes: list[Route]) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ProblemOut}
    for route in routes:
        if isinstance(route.body, type) and issubclass(route.body, BaseModel):
            models.add(route.body)
        models.update(m for m in route.responses.values() if m)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schemas = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    components: dict[str, Any] = dict(schemas.get("$defs", {}))
    problem = {
        "description": "A problem (RFC 9457)",
        "content": {
            "application/problem+json": {"schema": {"$ref": REF.format(model="ProblemOut")}}
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", route.path)
        ] + [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": schema,
                "description": text,
            }
            for name, schema, text in route.query
        ]
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": parameters,
            "responses": {
                str(status): _response(status, model, route.media_type)
                for status, model in route.responses.items()
            }
            | {"default": problem},
        }
        if route.name in PUBLIC:
            operation["security"] = []
        else:
            roles = sorted(role.value for role in PERMISSIONS.get(route.name, frozenset()))
            operation["description"] = "Roles: " + (", ".join(roles) or "none")
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _body_schema(route.body, components)}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley backend API", "version": "1", "description": DESCRIPTION},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _body_schema(body: Any, components: dict[str, Any]) -> dict[str, Any]:
    if isinstance(body, type) and issubclass(body, BaseModel):
        return {"$ref": REF.format(model=body.__name__)}
    assert isinstance(body, TypeAdapter)
    schema: dict[str, Any] = body.json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _response(status: int, model: type[BaseModel] | None, media_type: str) -> dict[str, Any]:
    if status == 204:
        return {"description": "Done; nothing to say"}
    if model is None:
        kind = "string" if media_type.startswith("text/") else "object"
        return {"description": "OK", "content": {media_type: {"schema": {"type": kind}}}}
    description = (model.__doc__ or "OK").strip().splitlines()[0]
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


async def serve(request: web.Request) -> web.Response:
    return web.Response(text=request.app[OPENAPI], content_type="application/json")


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(text=request.app[DOCS_PAGE], content_type="text/html")


def install(app: web.Application, routes: list[Route]) -> None:
    spec = document(routes)
    app[OPENAPI] = json.dumps(spec)
    app[DOCS_PAGE] = (TEMPLATES / "api_docs.html").read_text()
