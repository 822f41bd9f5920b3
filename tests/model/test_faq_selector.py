"""FaqSelector (bot/faq_selector.py) chooses exactly the FAQ answer Rasa's own
ResponseSelector chooses with the same trained model, for every held-out message read
as `faq`, and leaves every other message's parse as Rasa's would be without the
selector's output: same intent, ranking and entities."""

from __future__ import annotations

import pytest
from rasa.core.agent import Agent

from bot.faq_selector import FaqSelector
from tests.model.conftest import parse_all
from tests.model.test_model_loading import assert_same, comparable, held_out_messages


def test_the_faq_answer_is_rasas_and_other_messages_are_left_alone(
    agents: tuple[Agent, Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, _ = agents
    messages = held_out_messages()
    served = parse_all(agent, messages)
    monkeypatch.setattr(FaqSelector, "answers", lambda self, message: True)  # Rasa's own
    rasas = parse_all(agent, messages)

    faqs = 0
    for message, ours, theirs in zip(messages, served, rasas, strict=True):
        if ours["intent"]["name"] == "faq":
            faqs += 1
            assert ours["response_selector"]["faq"]["response"]["intent_response_key"]
            assert_same(comparable(theirs), comparable(ours), message)
        else:
            assert "response_selector" not in ours, message
            assert theirs["response_selector"]["faq"]["ranking"], message  # Rasa ran it
            without = {k: v for k, v in theirs.items() if k != "response_selector"}
            assert_same(comparable(without), comparable(ours), message)
    assert faqs >= 20 and len(messages) - faqs >= 100  # both kinds were tried
