"""bot/rules_first.py asks only the rule policy when it is certain, and Rasa's whole
ensemble otherwise (tests/model/test_rules_first.py compares both on the real model;
here, the cases Parley's model rarely or never reaches)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from rasa.core.policies.ensemble import DefaultPolicyPredictionEnsemble
from rasa.core.policies.memoization import MemoizationPolicy
from rasa.core.policies.policy import PolicyPrediction
from rasa.core.policies.rule_policy import RulePolicy
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.core.processor import MessageProcessor
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, ActionExecutionRejected, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot import rules_first

DOMAIN = Domain.from_dict({"intents": ["greet"], "actions": ["action_greet"]})


def tracker(*extra: Any) -> DialogueStateTracker:
    events = [ActionExecuted("action_listen"), UserUttered("hi", {"name": "greet"}), *extra]
    return DialogueStateTracker.from_events("someone", events, DOMAIN.slots)


def prediction(action: str, confidence: float) -> PolicyPrediction:
    probabilities = [0.0] * len(DOMAIN.action_names_or_texts)
    probabilities[DOMAIN.index_for_action(action)] = confidence
    return PolicyPrediction(probabilities, "RulePolicy", policy_priority=6)


class Processor:
    """What rules_first reads of Rasa's MessageProcessor, with the rule's answer set."""

    def __init__(self, rule: PolicyPrediction) -> None:
        self.domain = DOMAIN
        self.rule = rule
        self.__dict__["_parley_rules_first"] = rules_first.Shortcut(
            "run_RulePolicy0", DefaultPolicyPredictionEnsemble()
        )
        self.graph_runner = SimpleNamespace(run=self.run)

    def run(self, inputs: dict[str, Any], targets: list[str]) -> dict[str, Any]:
        assert targets == ["run_RulePolicy0"]
        return {"run_RulePolicy0": self.rule}


@pytest.fixture
def rasas(monkeypatch: pytest.MonkeyPatch) -> list[DialogueStateTracker]:
    """Rasa's own prediction, replaced by one that notes each tracker it is asked about."""
    asked: list[DialogueStateTracker] = []

    def whole_ensemble(processor: Any, tracker: DialogueStateTracker) -> PolicyPrediction:
        asked.append(tracker)
        return prediction("action_greet", 0.8)

    monkeypatch.setattr(rules_first, "RASAS_PREDICT", whole_ensemble)
    return asked


def predict(processor: Processor, tracker: DialogueStateTracker) -> PolicyPrediction:
    return rules_first.predict_next_with_tracker(processor, tracker)


def test_a_certain_rule_decides_alone(rasas: list[DialogueStateTracker]) -> None:
    result = predict(Processor(prediction("action_greet", 1.0)), tracker())
    assert rasas == []
    assert result.max_confidence == 1.0 and result.policy_name == "RulePolicy"
    # The ensemble's own event after a message, as with every policy asked.
    assert [e.type_name for e in result.events] == ["user_featurization"]


@pytest.mark.parametrize("confidence", [0.3, 0.99])
def test_an_uncertain_rule_asks_every_policy(
    rasas: list[DialogueStateTracker], confidence: float
) -> None:
    result = predict(Processor(prediction("action_greet", confidence)), tracker())
    assert len(rasas) == 1 and result.max_confidence == 0.8


def test_a_rejected_action_and_a_follow_up_go_rasas_way(rasas: list[DialogueStateTracker]) -> None:
    certain = Processor(prediction("action_greet", 1.0))
    predict(certain, tracker(ActionExecutionRejected("action_greet")))
    follow_up = tracker()
    follow_up.trigger_followup_action("action_greet")
    predict(certain, follow_up)
    assert len(rasas) == 2


def model(*policies: Any) -> Any:
    """A processor whose graph holds these policies and Rasa's ensemble."""
    nodes = {
        f"run_{type(p).__name__}{i}": SimpleNamespace(_component=p) for i, p in enumerate(policies)
    }
    nodes["select_prediction"] = SimpleNamespace(_component=DefaultPolicyPredictionEnsemble())
    needs = {f"policy{i}": name for i, name in enumerate(list(nodes)[:-1])}
    schema = SimpleNamespace(
        nodes={"select_prediction": SimpleNamespace(needs={**needs, "tracker": "__tracker__"})}
    )
    return SimpleNamespace(
        model_metadata=SimpleNamespace(core_target="select_prediction", predict_schema=schema),
        graph_runner=SimpleNamespace(_instantiated_nodes=nodes),
    )


def policy(cls: type, priority: int, **attributes: Any) -> Any:
    made: Any = object.__new__(cls)
    made.priority = priority
    made.__dict__.update(attributes)
    return made


def test_the_shortcut_is_planned_only_where_it_is_proven() -> None:
    rule = policy(RulePolicy, 6)
    memo = policy(MemoizationPolicy, 3)
    ted = policy(TEDPolicy, 1, fake_features={"intent": []}, only_e2e=False)
    planned = rules_first.plan(model(rule, memo, ted))
    assert planned is not None and planned.rule_node == "run_RulePolicy0"
    # TED trained on text: its end-to-end predictions overrule the rules'.
    e2e = policy(TEDPolicy, 1, fake_features={"text": [], "intent": []}, only_e2e=False)
    assert rules_first.plan(model(rule, memo, e2e)) is None
    # Another policy as high as the rules wins their ties.
    assert rules_first.plan(model(rule, policy(MemoizationPolicy, 6), ted)) is None
    # No rule policy at all.
    assert rules_first.plan(model(memo, ted)) is None


def test_install_replaces_rasas_method() -> None:
    try:
        rules_first.install()
        assert MessageProcessor._predict_next_with_tracker is rules_first.predict_next_with_tracker
    finally:
        MessageProcessor._predict_next_with_tracker = rules_first.RASAS_PREDICT
