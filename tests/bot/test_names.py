"""Reading a name out of what a person said."""

from __future__ import annotations

import pytest

from actions.names import name_from
from tests.bot.conftest import make_tracker


@pytest.mark.parametrize(
    ("text", "entity", "expected"),
    [
        ("my name is Ada", "Ada", "Ada"),
        ("my name is Ada", None, "Ada"),
        ("I'm grace hopper", None, "Grace hopper"),
        ("call me Jean-Luc!", None, "Jean-Luc"),
        ("it's María José", None, "María José"),
        ("Priya", None, "Priya"),
        ("McKenzie.", None, "McKenzie"),
        ("my name is", None, None),
        ("42", None, None),
        ("", None, None),
        ("x" * 150, None, None),
    ],
)
def test_name_from(text: str, entity: str | None, expected: str | None) -> None:
    entities = [{"entity": "name", "value": entity}] if entity else []
    assert name_from(make_tracker("s", text, "tell_name", entities)) == expected
