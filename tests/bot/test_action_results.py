"""A custom action's result is checked with a validator built once, and the outcome is
Rasa's own: accepted results accepted, refused ones refused with the same error."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction

from bot import action_results

RASAS_OWN = RemoteAction._validate_action_result

RESULTS: list[Any] = [
    {"events": [], "responses": []},
    {"events": [{"event": "slot", "name": "greeting", "value": "new"}],
     "responses": [{"text": "hi", "buttons": []}]},
    {"events": [{"event": "followup", "name": "action_greet"}]},
    {"events": [{"event": "active_loop", "name": None}, {"event": "reset_slots"}]},
    {"events": [{"event": "user", "text": "hi", "parse_data": {"intent": {"name": "greet"}}}]},
    {},
    # Refused, each for a different reason.
    {"events": "not a list"},
    {"events": [{"name": "no event type"}]},
    {"events": [{"event": "no-such-event"}]},
    {"events": [{"event": "slot", "name": 3}]},
    {"responses": ["not an object"]},
    {"responses": {"text": "not a list"}},
    [],
    "text",
    None,
]  # fmt: skip


def outcome(validate: Any, result: Any) -> tuple[str, str | None, tuple[Any, ...]]:
    action = RemoteAction("action_anything", None)
    try:
        validate(action, result)
    except ValidationError as error:
        return "refused", error.message, tuple(error.absolute_path)
    return "accepted", None, ()


@pytest.mark.parametrize("result", RESULTS, ids=range(len(RESULTS)))
def test_the_compiled_validator_answers_as_rasa_does(result: Any) -> None:
    assert outcome(action_results.validate_action_result, result) == outcome(RASAS_OWN, result)


def test_refused_results_are_among_the_cases() -> None:
    verdicts = [outcome(RASAS_OWN, result)[0] for result in RESULTS]
    assert verdicts.count("refused") >= 8 and verdicts.count("accepted") >= 5


def test_install_replaces_rasas_method() -> None:
    try:
        action_results.install()
        assert RemoteAction._validate_action_result is action_results.validate_action_result
        with pytest.raises(ValidationError, match="Failed to validate Action server response"):
            RemoteAction("action_x", None)._validate_action_result({"events": 1})
    finally:
        RemoteAction._validate_action_result = RASAS_OWN
