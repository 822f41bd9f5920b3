"""Hostile JSON stopped at the bot's door, before Rasa or a channel reads it.

Rasa's Sanic app serves JSON routes Parley does not own (the REST channel, Rasa's HTTP
API) beside Parley's channels, and Sanic's `request.json` parses with ujson, which lets
through NaN, Infinity, numbers that overflow, lone UTF-16 surrogates and nesting up to
a thousand levels. Inside Rasa those become 500s with tracebacks (copying a deep
message recurses too far), failed turns (spaCy cannot encode a surrogate), or worse: a
conversation id holding a surrogate makes Rasa's SQL tracker store exit the process.

`install()` wraps Rasa's `configure_app` so that every app it builds gets `guard`: one
request middleware that parses each JSON body within the bounds below and answers 400
`application/problem+json` (type `urn:parley:problem:invalid-json`) when it is outside
them; a body it accepts is handed on already parsed (`request.json`). A body counts as
JSON when its Content-Type says so, or, whatever that says, unless YAML, when it starts
with `{` or `[`: Sanic's `request.json`, which the REST channel calls, reads it anyway.
`SocketJson` applies the same bounds to the web chat's socket.io packets.

The bounds are the backend's (backend/api/bounded_json.py): at most 32 levels of
nesting, integers within 64 bits, finite numbers only, UTF-8 without lone surrogates;
duplicate keys are allowed (the last one wins). The two runtimes share no imports, so
the parser below is a copy of the backend's.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "urn:parley:problem:invalid-json"
MAX_DEPTH = 32
# What a BIGINT column holds.
SMALLEST_INT, LARGEST_INT = -(2**63), 2**63 - 1
# Only these can be out of range: a run of 19 digits or more, or a positive exponent of
# three digits (anything shorter is finite and within 64 bits). They are looked for in a
# copy of the body with every digit made "0" (a false find only costs the hooks).
_AS_ZEROS = bytes.maketrans(b"123456789E", b"000000000e")
_LARGE_NUMBERS = (b"0" * 19, b"e000", b"e+000")
# Only an escape in D800-DFFF can yield a lone surrogate (raw bytes must be UTF-8).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")
_LOOKS_LIKE_JSON = re.compile(rb"\s*[\[{]")


class UnacceptableJson(ValueError):
    """The body is not JSON Parley accepts; the message says why, for the client."""


def parse(raw: bytes) -> Any:
    """The JSON value in `raw` (UTF-8), or `UnacceptableJson`."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnacceptableJson(f"it is not UTF-8 text (byte {error.start})") from None
    hooks: dict[str, Any] = {"parse_constant": _constant}
    zeroed = raw.translate(_AS_ZEROS)
    if any(large in zeroed for large in _LARGE_NUMBERS):
        hooks |= {"parse_int": _bounded_int, "parse_float": _finite_float}
    try:
        value = json.loads(text, **hooks)
    except RecursionError:
        raise UnacceptableJson(f"it is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        raise UnacceptableJson(str(error)) from None
    # A document can only be deeper than MAX_DEPTH if it opens more arrays and objects.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper_than(raw, MAX_DEPTH):
        raise UnacceptableJson(f"it is nested deeper than {MAX_DEPTH} levels")
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise UnacceptableJson("a string holds a lone UTF-16 surrogate, which is not text")
    return value


def _bounded_int(literal: str) -> int:
    # Longer literals are never converted: Python refuses past 4,300 digits anyway.
    if len(literal) <= len(str(SMALLEST_INT)):
        number = int(literal)
        if SMALLEST_INT <= number <= LARGEST_INT:
            return number
    raise UnacceptableJson(
        f"a number is too large: integers must lie between {SMALLEST_INT} and {LARGEST_INT}"
    )


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise UnacceptableJson(f"a number is too large: {literal[:40]} is beyond a float's range")
    return number


def _constant(literal: str) -> float:
    raise UnacceptableJson(f"{literal} is not a JSON number")


def _deeper_than(raw: bytes, limit: int) -> bool:
    """Whether the arrays and objects of valid JSON `raw` nest more than `limit` levels.
    Each pass drops the innermost pairs, so `limit` passes empty a shallow enough
    document; all of it runs in C, however many nodes the document has."""
    brackets = _STRING.sub(b"", raw).translate(_AS_SQUARE, _NOT_BRACKETS)
    for _ in range(limit):
        brackets = brackets.replace(b"[]", b"")
    return bool(brackets)


def _has_lone_surrogate(value: Any) -> bool:
    # Written out without escapes, a lone surrogate is the one thing UTF-8 cannot encode.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class SocketJson:
    """The `json` python-socketio and python-engineio decode packets with: `loads`
    within the bounds above (raising `UnacceptableJson`, a ValueError), `dumps` as is."""

    dumps = staticmethod(json.dumps)

    @staticmethod
    def loads(text: str | bytes, **_: Any) -> Any:
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        return parse(raw)


def install() -> None:
    """Every Sanic app Rasa's `configure_app` builds (`rasa run`) gets `guard`."""
    from rasa.core import run

    configure_app: Callable[..., Sanic] = run.configure_app
    if getattr(configure_app, "guards_json", False):
        return

    def configure_guarded_app(*args: Any, **kwargs: Any) -> Sanic:
        app = configure_app(*args, **kwargs)
        guard(app)
        return app

    configure_guarded_app.guards_json = True  # type: ignore[attr-defined]
    run.configure_app = configure_guarded_app


def guard(app: Sanic) -> None:
    app.register_middleware(refuse_unacceptable_json, "request")


async def refuse_unacceptable_json(request: Request) -> HTTPResponse | None:
    """A 400 problem for a JSON body outside the bounds; otherwise nothing, with the body
    parsed for the handler."""
    if not request.body or not _reads_as_json(request):
        return None
    try:
        request.parsed_json = parse(request.body)
    except UnacceptableJson as refused:
        logger.warning("json_guard.refused path=%s reason=%r", request.path, str(refused))
        problem = {
            "type": PROBLEM_TYPE,
            "title": "Bad Request",
            "status": 400,
            "detail": f"The body is not JSON Parley accepts: {refused}.",
            "instance": request.path,
        }
        return response.json(
            problem, status=400, content_type="application/problem+json", dumps=json.dumps
        )
    return None


def _reads_as_json(request: Request) -> bool:
    media_type = str(request.content_type).split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return True
    if "yaml" in media_type:
        return False
    return _LOOKS_LIKE_JSON.match(request.body) is not None
