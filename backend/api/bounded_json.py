"""JSON request bodies parsed within bounds the rest of the backend can live with.

`json.loads` accepts documents that break something later, as a 500: nesting deep
enough to exhaust the interpreter's stack (RecursionError), integers too long to
convert (ValueError past 4,300 digits) or too large for a database column, the
non-standard NaN and Infinity literals and numbers that overflow to infinity (SQLite
and PostgreSQL refuse both inside JSON), and lone UTF-16 surrogates (no UTF-8 encoder
writes them, so neither can a database). `parse` refuses each with `UnacceptableJson`,
whose message says what was wrong; duplicate keys are allowed (the last one wins).

The checks cost next to nothing on ordinary bodies: each runs only when a scan of the
raw bytes (in C) finds what it looks for, so a body is walked in Python only if it has
long digit runs, big exponents or surrogate escapes.

The bot runtime applies the same rules to its own routes (bot/json_guard.py); the two
runtimes share no imports, so it has its own copy.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

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
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_AS_SQUARE = bytes.maketrans(b"{}", b"[]")


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
    document; all of it runs in C, however many nodes the document has.

    The brackets that count are those outside strings. In valid JSON a backslash only
    starts an escape, so dropping `\\\\` and then `\\"` left to right leaves each quote
    that delimits a string; kept with the brackets, the strings are every other piece
    between quotes."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = unescaped.translate(_AS_SQUARE, _NOT_STRUCTURE)
    brackets = b"".join(skeleton.split(b'"')[::2])
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
