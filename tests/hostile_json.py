"""Hostile JSON values for both runtimes' tests (as tests/servers.py), each with what
the 400 that refuses it says. A test puts each where a body has a value, so that the
body around it is ordinary. Each once made a 500 with a traceback somewhere, reached a
database or a model that could not take it, or stopped the Rasa server."""

from __future__ import annotations

DEEP = 100_000

HOSTILE_VALUES: dict[str, tuple[bytes, str]] = {
    "deep-arrays": (b"[" * DEEP + b"]" * DEEP, "nested deeper than 32 levels"),
    "deep-objects": (b'{"a":' * DEEP + b"1" + b"}" * DEEP, "nested deeper than 32 levels"),
    # Deeper than Python's parser recurses to: the limit is checked after parsing.
    "900-levels": (b"[" * 900 + b"]" * 900, "nested deeper than 32 levels"),
    # 33 with the object around it.
    "33-levels": (b"[" * 32 + b"]" * 32, "nested deeper than 32 levels"),
    "5001-digit-integer": (b"1" + b"0" * 5000, "a number is too large"),
    "beyond-int64": (b"9223372036854775808", "a number is too large"),
    "below-int64": (b"-9223372036854775809", "a number is too large"),
    "float-overflow": (b"1e999", "a number is too large"),
    "nan": (b"NaN", "NaN is not a JSON number"),
    "infinity": (b"-Infinity", "-Infinity is not a JSON number"),
    "lone-surrogate": (b'"\\ud800"', "lone UTF-16 surrogate"),
    "utf8-encoded-surrogate": (b'"\xed\xa0\x80"', "not UTF-8"),
    "invalid-utf8": (b'"\xff"', "not UTF-8"),
}


def in_object(value: bytes) -> bytes:
    """`value` as the one member of a JSON object."""
    return b'{"n": ' + value + b"}"
