"""With bot/rules_first.py, a prediction a rule decides skips the other policies, and
every prediction is still the one Rasa's own code makes: the same action
probabilities, policy, events and flags at every step of every test story."""

from __future__ import annotations

import numpy as np
import pytest
from rasa.core.agent import Agent
from rasa.core.policies.policy import PolicyPrediction
from rasa.core.processor import MessageProcessor
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, Event, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot import rules_first
from tests.model.conftest import story_steps


def untimed(events: list[Event]) -> list[dict[str, object]]:
    """Events as dicts, without the moment each was made."""
    return [{k: v for k, v in event.as_dict().items() if k != "timestamp"} for event in events]


def fields(prediction: PolicyPrediction) -> tuple[object, ...]:
    return (
        prediction.policy_name,
        prediction.policy_priority,
        untimed(prediction.events),
        untimed(prediction.optional_events),
        prediction.is_end_to_end_prediction,
        prediction.is_no_user_prediction,
        prediction.hide_rule_turn,
        prediction.action_metadata,
    )


def unscripted_steps(agent: Agent) -> list[tuple[str, DialogueStateTracker]]:
    """Conversations no story or rule was written for: every intent said at the start,
    after a greeting and after a price answer, and the step after the bot's first
    action in each (as Rasa predicts it), so the other policies decide too."""
    assert agent.domain is not None and agent.processor is not None
    listen = ActionExecuted(ACTION_LISTEN_NAME)
    prefixes = {
        "start": [],
        "after a greeting": [
            listen, UserUttered("hi", {"name": "greet", "confidence": 1.0}),
            ActionExecuted("action_greet"), SlotSet("greeting", "new"),
            ActionExecuted("utter_greet_new"),
        ],
        "after a price": [
            listen, UserUttered("how much is Team", {"name": "ask_price", "confidence": 1.0}),
            SlotSet("product", "team"), ActionExecuted("utter_product_price"),
        ],
    }  # fmt: skip
    steps = []
    for label, prefix in prefixes.items():
        for intent in agent.domain.intents:
            said = UserUttered(f"({intent})", {"name": intent, "confidence": 1.0})
            events = [*prefix, listen, said]
            tracker = DialogueStateTracker.from_events("unscripted", events, agent.domain.slots)
            steps.append((f"{intent} {label}", tracker))
            first = rules_first.RASAS_PREDICT(agent.processor, tracker.copy())
            action = agent.domain.action_names_or_texts[int(np.argmax(first.probabilities))]
            if action != ACTION_LISTEN_NAME:
                events = [*events, ActionExecuted(action)]
                tracker = DialogueStateTracker.from_events("unscripted", events, agent.domain.slots)
                steps.append((f"{intent} {label}, after {action}", tracker))
    return steps


def test_every_test_story_step_is_predicted_as_rasa_predicts_it(
    agents: tuple[Agent, Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, agent = agents
    processor = agent.processor
    assert processor is not None
    rasas_predict = rules_first.RASAS_PREDICT
    asked_everyone = 0

    def counted(processor: MessageProcessor, tracker: DialogueStateTracker) -> PolicyPrediction:
        nonlocal asked_everyone
        asked_everyone += 1
        return rasas_predict(processor, tracker)

    monkeypatch.setattr(rules_first, "RASAS_PREDICT", counted)
    shortcuts = full = 0
    # The test stories (rules decide nearly all their steps) and conversations nobody
    # wrote, where the other policies decide too.
    steps = [*story_steps(agent), *unscripted_steps(agent)]
    for step, tracker in steps:
        rasas = rasas_predict(processor, tracker.copy())
        before = asked_everyone
        parleys = rules_first.predict_next_with_tracker(processor, tracker.copy())
        assert fields(parleys) == fields(rasas), step
        np.testing.assert_allclose(parleys.probabilities, rasas.probabilities, err_msg=step)
        if asked_everyone == before:
            shortcuts += 1
        else:
            full += 1
    # Both ways were taken, often.
    assert shortcuts > 50 and full > 20, (shortcuts, full)
