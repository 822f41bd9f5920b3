"""Rasa's ResponseSelector, run only for the messages whose answer it chooses.

The ResponseSelector picks which FAQ answer (`utter_faq/<id>`) a message gets. Rasa
runs it on every message, but its choice is used only for a message read as its
retrieval intent (`faq`: the rules' `utter_faq`), and running it costs a turn about
5 ms of TensorFlow on 2 cores (docs/scaling.md, "What a turn costs"). `FaqSelector`
comes after the intent is final (after ClearRequests and the FallbackClassifier,
config.yml) and selects for the messages read as `faq`; any other message passes as
it came, with no `response_selector` in its parse, as it would with no FAQ at all.

What it selects is Rasa's own: training, the model and the prediction are the
ResponseSelector's, untouched (tests/model checks it against Rasa's on the trained
model). It only learns nothing from the intent: the ResponseSelector reads the
message's features, which the classifiers before it leave as they are.
"""

from __future__ import annotations

from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.nlu.selectors.response_selector import ResponseSelector
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY
from rasa.shared.nlu.training_data.message import Message


@DefaultV1Recipe.register(DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER, is_trainable=True)
class FaqSelector(ResponseSelector):
    """See the module's doc."""

    def process(self, messages: list[Message]) -> list[Message]:
        chosen = [message for message in messages if self.answers(message)]
        if chosen:
            super().process(chosen)
        return messages

    def answers(self, message: Message) -> bool:
        """Whether this message's answer is the selector's to choose."""
        if not self.retrieval_intent:  # a selector for every retrieval intent
            return True
        intent = (message.get(INTENT) or {}).get(INTENT_NAME_KEY)
        return bool(intent == self.retrieval_intent)
