"""Errors as values at the edge: RFC 9457 problem details (application/problem+json).

Handlers raise `Problem`; the middleware turns it, aiohttp's own HTTP errors, and
anything unexpected into a problem body. No stack trace ever reaches a client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy.orm.exc import StaleDataError

from backend.core.database import database_unavailable
from backend.core.logs import get_logger

log = get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
# Problem types are URNs: stable names a client can switch on, listed in docs/api.md.
TYPE_PREFIX = "urn:parley:problem:"


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        type_: str | None = None,
        title: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        # Members of the problem type beyond RFC 9457's own (its section 3.2).
        self.extensions = extensions or {}
        self.status = status
        self.detail = detail
        self.type = f"{TYPE_PREFIX}{type_}" if type_ else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.errors = list(errors) if errors else None
        self.headers = headers or {}

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            **self.extensions, "type": self.type, "title": self.title, "status": self.status,
        }  # fmt: skip
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors is not None:
            body["errors"] = self.errors
        return body

    def response(self, instance: str | None = None) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body(instance)),
            content_type=PROBLEM_JSON,
            headers=self.headers,
        )


def invalid_body(error: ValidationError, prefix: str = "") -> Problem:
    """A 422 that names every field that is wrong (as a JSON pointer) and why."""
    errors = [
        {
            "pointer": prefix + "/" + "/".join(str(part) for part in _path(item["loc"])),
            "detail": str(item["msg"]).removeprefix("Value error, "),
        }
        for item in error.errors(include_url=False, include_input=False)
    ]
    return Problem(
        422,
        "; ".join(f"{e['pointer']}: {e['detail']}" for e in errors),
        type_="invalid-body",
        title="The request body is not valid",
        errors=errors,
    )


def _path(loc: Sequence[int | str]) -> list[int | str]:
    # Tagged unions put their tag in the location; Parley's tags start with "~".
    return [part for part in loc if not (isinstance(part, str) and part.startswith("~"))]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except StaleDataError:
        # Another request changed or erased the same row between our read and our write.
        return Problem(
            409,
            "Someone else changed this at the same moment; read it again and retry.",
            type_="concurrent-change",
        ).response(request.path)
    except web.HTTPException as http_error:
        if http_error.status < 400:
            raise
        headers = {k: v for k, v in http_error.headers.items() if k.lower() == "allow"}
        return Problem(http_error.status, headers=headers).response(request.path)
    except Exception as error:
        if database_unavailable(error):
            # The database (or a service it needs) is away or restarting ("the database
            # system is starting up" is neither an OperationalError nor an
            # InterfaceError to SQLAlchemy): nothing was done, and the caller can try
            # again (Twilio falls back or retries; the channels retry).
            log.warning("request.unavailable", method=request.method, path=request.path,
                        exc_info=True)  # fmt: skip
            return Problem(
                503,
                "Parley cannot reach its database right now; nothing was done. Try again shortly.",
                type_="database-unavailable",
                headers={"Retry-After": "5"},
            ).response(request.path)
        # The one place an unexpected error is caught: logged with its trace for
        # the operator, answered without it.
        log.exception("request.failed", method=request.method, path=request.path)
        return Problem(500, "The server could not handle this request.").response(request.path)


def invalid_fields(errors: Sequence[tuple[str, str]]) -> Problem:
    """A 422 for fields found wrong after validation: (JSON pointer, what is wrong) pairs."""
    return Problem(
        422,
        "; ".join(f"{pointer}: {detail}" for pointer, detail in errors),
        type_="invalid-body",
        title="The request body is not valid",
        errors=[{"pointer": pointer, "detail": detail} for pointer, detail in errors],
    )
