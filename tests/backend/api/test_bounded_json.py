"""The depth bound of request bodies: brackets inside strings never count, however the
strings escape their quotes and backslashes (the check reads the raw bytes, not the
parsed value)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.api import bounded_json

# Strings made of what could fool a reading of the raw bytes.
TRICKY = st.text(alphabet='[]{}"\\/nu0 é', max_size=12)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), TRICKY)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TRICKY, inner, max_size=3),
    max_leaves=12,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


def nested(value: Any, levels: int) -> Any:
    for n in range(levels):
        value = [value] if n % 2 else {'[{\\"': value}
    return value


@given(VALUES, st.integers(0, 34), st.booleans())
def test_a_body_is_refused_exactly_when_it_nests_deeper_than_the_bound(
    value: Any, levels: int, ascii_only: bool
) -> None:
    document = nested(value, levels)
    raw = json.dumps(document, ensure_ascii=ascii_only).encode()
    if depth(document) > bounded_json.MAX_DEPTH:
        with pytest.raises(bounded_json.UnacceptableJson, match="nested deeper than 32"):
            bounded_json.parse(raw)
    else:
        assert bounded_json.parse(raw) == document


@pytest.mark.parametrize(
    "text",
    ['"]]]]"', '"\\\\"', '"\\\\\\""', '"\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\\""'],
)
def test_brackets_and_escapes_inside_strings_do_not_count(text: str) -> None:
    raw = ("[" * 32 + text + "]" * 32).encode()
    assert bounded_json.parse(raw) == nested_list(json.loads(text), 32)
    with pytest.raises(bounded_json.UnacceptableJson, match="nested deeper"):
        bounded_json.parse(b"[" + raw + b"]")


def nested_list(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value
