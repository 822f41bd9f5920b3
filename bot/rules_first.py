"""When a rule decides the next action, the other policies are not asked.

Rasa 3.6 predicts every next action by running all the dialogue policies (RulePolicy,
MemoizationPolicy, TEDPolicy) and letting its ensemble pick one. Most of Parley's turns
are decided by rules, and a rule that applies predicts its action with confidence 1.0,
the highest any policy can give; the ensemble breaks ties by priority, and RulePolicy's
is the highest. So when the rule policy is certain, the ensemble's choice is known
before TED's neural network runs (the most expensive step of a prediction).

`install()` replaces `MessageProcessor._predict_next_with_tracker` with one that runs
the rule policy's graph node first and, when it is certain, hands that prediction alone
to Rasa's own ensemble, which adds its events exactly as it does with all of them.
Everything else goes Rasa's way, unchanged: a follow-up action, an action whose
execution was just rejected (the ensemble zeroes it in every prediction), a rule that is
not certain, and any model where the shortcut could not be proven to give the same
answer: a policy of priority equal to or above the rule policy's, or a TED trained on
text (end-to-end), whose text predictions overrule intent-based ones. Besides
RulePolicy's, only the ensemble's own events and the winner's optional events are
added; the policies skipped add none (MemoizationPolicy's and TED's predictions carry no
mandatory events). tests/model/test_rules_first.py checks every step of every test
story against Rasa's own code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from rasa.core.policies.ensemble import DefaultPolicyPredictionEnsemble
from rasa.core.policies.policy import Policy, PolicyPrediction
from rasa.core.policies.rule_policy import RulePolicy
from rasa.core.policies.ted_policy import TEDPolicy
from rasa.core.processor import MessageProcessor
from rasa.engine.graph import GraphNode
from rasa.shared.core.events import ActionExecuted, ActionExecutionRejected
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import TEXT

log = logging.getLogger(__name__)

RASAS_PREDICT = MessageProcessor._predict_next_with_tracker
PLACEHOLDER_TRACKER = "__tracker__"  # rasa.graph_components.providers (Rasa 3.6)
CERTAIN = 1.0


@dataclass(frozen=True)
class Shortcut:
    rule_node: str
    ensemble: DefaultPolicyPredictionEnsemble


def _component(processor: MessageProcessor, name: str) -> Any:
    node: GraphNode = processor.graph_runner._instantiated_nodes[name]
    return node._component


def plan(processor: MessageProcessor) -> Shortcut | None:
    """The shortcut for this model, or None where it cannot be proven to answer as
    Rasa does. Needs the graph's components loaded (after one prediction)."""
    target = processor.model_metadata.core_target
    if not target:
        return None
    ensemble = _component(processor, target)
    if type(ensemble) is not DefaultPolicyPredictionEnsemble:
        return None
    loaded = processor.graph_runner._instantiated_nodes
    inputs = {
        name: _component(processor, name)
        for name in processor.model_metadata.predict_schema.nodes[target].needs.values()
        if name in loaded  # not the tracker placeholder
    }
    if any(component is None for component in inputs.values()):
        return None  # not loaded yet
    policies = {name: c for name, c in inputs.items() if isinstance(c, Policy)}
    rules = [name for name, policy in policies.items() if type(policy) is RulePolicy]
    if len(rules) != 1:
        return None
    rule_priority = policies[rules[0]].priority
    for name, policy in policies.items():
        if name == rules[0]:
            continue
        if policy.priority >= rule_priority:
            return None
        if isinstance(policy, TEDPolicy) and (TEXT in policy.fake_features or policy.only_e2e):
            return None
    return Shortcut(rules[0], ensemble)


def _just_rejected(tracker: DialogueStateTracker) -> bool:
    for event in reversed(tracker.events):
        if isinstance(event, ActionExecutionRejected):
            return True
        if isinstance(event, ActionExecuted):
            return False
    return False


def predict_next_with_tracker(
    self: MessageProcessor, tracker: DialogueStateTracker
) -> PolicyPrediction:
    shortcut: Shortcut | None = self.__dict__.get("_parley_rules_first")
    if shortcut is None or tracker.followup_action or _just_rejected(tracker):
        prediction = RASAS_PREDICT(self, tracker)
        if "_parley_rules_first" not in self.__dict__:
            self.__dict__["_parley_rules_first"] = plan(self)
            log.info(
                "rules_first.plan shortcut=%s", self.__dict__["_parley_rules_first"] is not None
            )
        return prediction
    rule: PolicyPrediction = self.graph_runner.run(
        inputs={PLACEHOLDER_TRACKER: tracker}, targets=[shortcut.rule_node]
    )[shortcut.rule_node]
    if rule.max_confidence < CERTAIN:
        return RASAS_PREDICT(self, tracker)
    return shortcut.ensemble.combine_predictions([rule], tracker, self.domain)


def install() -> None:
    MessageProcessor._predict_next_with_tracker = predict_next_with_tracker
