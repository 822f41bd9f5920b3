"""ClearRequests: requests to stop and for a person are read as such whatever DIET said,
and sentences that only contain the words are left alone. The phrasings here are this
test's own; tests/nlu/legal measures the whole model on a set nobody trained on."""

from __future__ import annotations

import pytest
from rasa.shared.nlu.constants import INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.clear_requests import ClearRequests, intent_for

OPT_OUTS = [
    "pls stop sending me all these promos",
    "no more marketing texts, thank you",
    "enough with the daily emails",
    "don't ever text me again",
    "do not call this number",
    "never contact me again",
    "I no longer want your newsletters",
    "quit messaging me",
    "stop calling",
    "kindly remove my email from your mailing list",
    "please take us off your contact list",
    "get me off the list already",
    "unsubscribe",
    "Unsubscribe me please",
    "i wanna unsub",
    "opt me out",
    "I've opted out twice already!!",
    "I hereby revoke my consent",
    "withdrawing my permission to contact me",
    "cancel all the texts",
    "just leave me alone",
    "you have the wrong number",
    "delete my number",
    "I dont need these any more",
    "I already said stop",
    "how often do I need to tell you to stop",
    "can you stop texting me?",
    "STOP SPAMMING ME",
]

NOT_OPT_OUTS = [
    # questions about opting out: answered, nothing withdrawn
    "how do I unsubscribe later if I change my mind?",
    "can I opt out of the newsletter but keep the texts?",
    "what happens when I text stop?",
    "is it easy to cancel the emails later?",
    "can our users opt out of surveys?",
    # the words, about something else
    "cancel the call on friday, something came up",
    "I quit my job at a call centre, now I run a shop",
    "don't take me off the list, I like the tips",
    "I don't want the emails to stop",
    "I never said stop",
    "don't stop sending the offers",
    "my customers keep asking how to unsubscribe from our emails",
    "stop, I picked the wrong plan",
    "remove the second seat from my invoice",
    "is one seat enough for a team of two?",
]


@pytest.mark.parametrize("text", OPT_OUTS)
def test_a_request_to_stop_is_an_opt_out_whatever_diet_said(text: str) -> None:
    for diet_said in ("subscribe", "nlu_fallback", "change_preferences", "stop", "greet"):
        assert intent_for(text, diet_said) == "opt_out", diet_said


@pytest.mark.parametrize("text", NOT_OPT_OUTS)
def test_words_that_do_not_ask_to_stop_are_left_to_diet(text: str) -> None:
    assert intent_for(text, "faq") == "faq"
    assert intent_for(text, "ask_opt_out") == "ask_opt_out"


def test_a_statement_of_opting_out_is_not_a_question_about_it() -> None:
    assert intent_for("I am opting out of all of this", "ask_opt_out") == "opt_out"
    assert intent_for("how do I opt out of all of this?", "ask_opt_out") == "ask_opt_out"


def test_a_question_naming_nothing_about_messages_is_never_an_opt_out() -> None:
    assert intent_for("is 5 GB of attachments enough?", "opt_out") == ""
    # ...but a question about our messages keeps DIET's opt-out
    assert intent_for("why won't the texts stop?", "opt_out") == "opt_out"
    assert intent_for("enough!", "opt_out") == "opt_out"


@pytest.mark.parametrize(
    "text",
    [
        "this bot is hopeless, I want a human",
        "you're just a robot, get me a real person",
        "give me an actual agent please",
        "real human please",
        "let me speak to someone",
    ],
)
def test_a_complaint_asking_for_a_person_is_a_handoff(text: str) -> None:
    assert intent_for(text, "bot_challenge") == "human_handoff"
    assert intent_for(text, "nlu_fallback") == "human_handoff"


def test_a_bot_question_or_a_refused_person_is_no_handoff() -> None:
    assert intent_for("am I talking to a bot?", "bot_challenge") == "bot_challenge"
    assert intent_for("I'm a real person, are you?", "bot_challenge") == "bot_challenge"
    # DIET's hand-off taken back by the words
    assert intent_for("I don't want to talk to a person, just the price", "human_handoff") == ""
    assert intent_for("nah I don't need a human", "deny") == "deny"
    # ...but not wanting the bot is wanting a person
    assert intent_for("I'm sick of chatting with a machine", "nlu_fallback") == "human_handoff"
    # another intent DIET was sure of is kept
    assert intent_for("I need someone to set up our widget", "ask_product") == "ask_product"


def message(text: str, ranking: list[tuple[str, float]]) -> Message:
    found = Message(data={TEXT: text})
    found.set(INTENT, {"name": ranking[0][0], "confidence": ranking[0][1]})
    found.set(INTENT_RANKING_KEY, [{"name": n, "confidence": c} for n, c in ranking])
    return found


def test_the_component_makes_the_request_the_sure_intent_and_keeps_the_ranking() -> None:
    component = ClearRequests()
    [parsed] = component.process(
        [message("dont txt me anymore", [("subscribe", 0.81), ("opt_out", 0.12)])]
    )
    assert parsed.get(INTENT) == {"name": "opt_out", "confidence": 1.0}
    assert [r["name"] for r in parsed.get(INTENT_RANKING_KEY)] == ["opt_out"]


def test_the_component_falls_back_to_diets_next_best_when_it_vetoes() -> None:
    component = ClearRequests()
    [parsed] = component.process(
        [message("is one seat enough?", [("opt_out", 0.6), ("ask_product", 0.3)])]
    )
    assert parsed.get(INTENT) == {"name": "ask_product", "confidence": 0.3}


def test_the_component_leaves_everything_else_as_diet_said() -> None:
    component = ClearRequests()
    [parsed] = component.process([message("how much is Team?", [("ask_price", 0.97)])])
    assert parsed.get(INTENT) == {"name": "ask_price", "confidence": 0.97}
