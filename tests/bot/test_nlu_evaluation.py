"""Scoring (bot/nlu_evaluation.py): the intents with legal weight, by missed and false
rates per held-out set, judged by what the bot does with each parse, and their maximums;
and FAQ answers, counted as the bot gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rasa.shared.nlu.training_data.message import Message

from bot.nlu_evaluation import LEGAL_GATES, LegalSet, acts_as, evaluate, legal_sets, score_legal

LEGAL = Path(__file__).resolve().parents[1] / "nlu" / "legal"


def test_every_legal_set_has_its_own_gate_and_sentences() -> None:
    sets = legal_sets(LEGAL)
    assert {s.intent for s in sets} == {"opt_out", "affirm", "deny", "human_handoff"}
    for legal in sets:
        assert legal.intent in LEGAL_GATES
        assert legal.means and legal.near_misses, legal.file


def test_the_opt_out_gate_is_the_one_the_issue_asks_for() -> None:
    assert LEGAL_GATES["opt_out"].max_missed == 0.02
    assert LEGAL_GATES["opt_out"].max_false == 0.0
    assert LEGAL_GATES["affirm"].max_false == 0.0  # nobody is signed up on a near miss
    assert "affirm" in LEGAL_GATES["deny"].never  # no refusal is taken for a yes


@pytest.mark.parametrize(
    ("intent", "predicted", "text", "acts"),
    [
        ("opt_out", "opt_out", "take me off your list", True),
        ("opt_out", "opt_out", "can my customers unsubscribe from our surveys?", False),
        ("opt_out", "stop", "please stop!!", True),  # outside a form: an opt-out
        ("opt_out", "stop", "stop asking me things", False),  # withdraws nothing
        ("opt_out", "stop", "get me off this list", True),  # about our messages
        ("opt_out", "deny", "no more texts", False),
        ("deny", "deny", "nope", True),
        ("deny", "opt_out", "no texts please", True),  # withdraws: nothing is granted
        ("deny", "skip", "I'll pass", True),  # "passing on the consent question is a no"
        ("deny", "unsure", "maybe", False),  # "take your time", not a refusal
        ("affirm", "affirm", "sure", True),
        ("affirm", "affirm", "yes but not at that number", False),  # asked again
        ("affirm", "subscribe", "yes text me", False),
        ("human_handoff", "bot_challenge", "are you a bot?", False),
    ],
)
def test_acts_as_is_what_the_bot_does_with_the_parse(
    intent: str, predicted: str, text: str, acts: bool
) -> None:
    assert acts_as(intent, predicted, text) is acts


def test_missed_and_false_rates_count_and_list_the_sentences() -> None:
    legal = LegalSet(
        file="opt_out.yml",
        intent="opt_out",
        means=["stop texting me", "enough!", "lose my number", "unsubscribe"],
        near_misses=["can I cancel anytime?", "wait stop, I meant Team", "do you take amex?"],
    )
    predicted = {
        "stop texting me": "opt_out",
        "enough!": "stop",
        "lose my number": "choose_time",
        "unsubscribe": "opt_out",
        "can I cancel anytime?": "faq",
        "wait stop, I meant Team": "stop",
        "do you take amex?": "opt_out",
    }
    scores = score_legal(legal, predicted)
    assert (scores.missed, scores.means, scores.missed_rate) == (1, 4, 0.25)
    assert scores.missed_examples == [{"text": "lose my number", "predicted": "choose_time"}]
    assert (scores.false, scores.near_misses) == (1, 3)
    assert scores.false_examples == [{"text": "do you take amex?", "predicted": "opt_out"}]
    assert not scores.passed


def test_a_refusal_taken_for_a_yes_fails_whatever_the_rates() -> None:
    means = [f"no {i}" for i in range(99)] + ["no, but thanks?"]
    legal = LegalSet("consent_no.yml", "deny", means=means, near_misses=[])
    predicted = {text: "deny" for text in means} | {"no 7": "affirm", "no 8": "affirm"}
    predicted["no, but thanks?"] = "affirm"  # not a clear yes: asked again, not recorded
    scores = score_legal(legal, predicted)
    assert scores.missed_rate == 0.03 <= scores.max_missed
    assert scores.taken_for_never == 2
    assert not scores.passed


def test_rates_at_their_maximum_pass() -> None:
    means = [f"stop {i}" for i in range(100)]
    legal = LegalSet("opt_out.yml", "opt_out", means=means, near_misses=["how much?"])
    predicted = {text: "opt_out" for text in means} | {"stop 1": "faq", "stop 2": "faq"}
    scores = score_legal(legal, predicted | {"how much?": "ask_price"})
    assert scores.missed_rate == 0.02
    assert scores.passed


class ParsingAgent:
    """Parses each text as given: its intent and, if any, the FAQ answer chosen."""

    def __init__(self, parses: dict[str, tuple[str, str | None]]) -> None:
        self.parses = parses

    async def parse_message(self, text: str) -> dict[str, Any]:
        intent, answer = self.parses[text]
        parsed: dict[str, Any] = {"intent": {"name": intent}, "entities": []}
        if answer is not None:
            chosen = {"response": {"intent_response_key": answer}}
            parsed["response_selector"] = {"faq": chosen}
        return parsed


async def test_a_faq_answer_counts_only_when_the_bot_would_give_it() -> None:
    examples = [
        Message({"text": "free trial?", "intent": "faq", "intent_response_key": "faq/trial"}),
        Message({"text": "cancel?", "intent": "faq", "intent_response_key": "faq/cancel"}),
        Message({"text": "amex?", "intent": "faq", "intent_response_key": "faq/payment"}),
        Message({"text": "hours?", "intent": "faq", "intent_response_key": "faq/hours"}),
    ]
    agent = ParsingAgent(
        {
            "free trial?": ("faq", "faq/trial"),  # right
            "cancel?": ("faq", "faq/refunds"),  # read as faq, the wrong answer
            "amex?": ("nlu_fallback", "faq/payment"),  # "please rephrase": no answer given
            "hours?": ("nlu_fallback", None),
        }
    )
    scores = await evaluate(agent, examples)
    assert (scores.faq_questions, scores.faq_read_as_faq, scores.faq_answered_right) == (4, 2, 1)
    assert scores.faq_answer_accuracy == 0.25
