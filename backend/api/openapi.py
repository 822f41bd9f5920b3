"""The OpenAPI 3.1 document, generated from the route table and its pydantic models."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend.api.permissions import PERMISSIONS, PUBLIC
from backend.api.schemas import ProblemOut
from backend.keys import OPENAPI

if TYPE_CHECKING:
    from backend.api.routes import Route

REF = "#/components/schemas/{model}"


def document(routes: list[Route]) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ProblemOut}
    for route in routes:
        if route.body:
            models.add(route.body)
        models.update(m for m in route.responses.values() if m)
    ordered = sorted(models, key=lambda m: m.__name__)
    _, schemas = models_json_schema([(m, "validation") for m in ordered], ref_template=REF)
    problem = {
        "description": "A problem (RFC 9457)",
        "content": {
            "application/problem+json": {"schema": {"$ref": REF.format(model="ProblemOut")}}
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.name,
            "summary": route.summary,
            "tags": [route.tag],
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in re.findall(r"{(\w+)}", route.path)
            ],
            "responses": {
                str(status): _response(model) for status, model in route.responses.items()
            }
            | {"default": problem},
        }
        if route.name in PUBLIC:
            operation["security"] = []
        else:
            roles = sorted(role.value for role in PERMISSIONS.get(route.name, frozenset()))
            operation["description"] = "Roles: " + (", ".join(roles) or "none")
        if route.body:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": REF.format(model=route.body.__name__)}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parley backend API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _response(model: type[BaseModel] | None) -> dict[str, Any]:
    if model is None:
        return {
            "description": "OK",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {
        "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else "OK",
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
    }


async def serve(request: web.Request) -> web.Response:
    return web.Response(text=request.app[OPENAPI], content_type="application/json")


def install(app: web.Application, routes: list[Route]) -> None:
    app[OPENAPI] = json.dumps(document(routes))
