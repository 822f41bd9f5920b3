"""The two-stage fallback (rephrase, then offer a person) and the product actions (which
product was named, and comparing two of them from data/catalog.yml)."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.fallback import ActionFallback
from actions.products import ActionCompareProducts, ActionNoteProduct, names_unknown_product
from bot.business import load_catalog
from bot.training_build import product_responses
from tests.bot.fakes import bot_said, conversation, entity, person_said

SENDER = "web-fallback-1"


# -- fallback ----------------------------------------------------------------------------


async def fallback(before: list[dict[str, Any]], text: str = "blorp zzz") -> list[Any]:
    tracker = conversation(SENDER, text, "nlu_fallback", before=before)
    return await ActionFallback().run(CollectingDispatcher(), tracker, {})


async def test_a_first_misunderstanding_asks_to_rephrase() -> None:
    assert await fallback([]) == [SlotSet("fallback", "rephrase")]


async def test_a_misunderstanding_after_an_understood_message_asks_to_rephrase() -> None:
    before = [
        person_said("gibberish", "nlu_fallback"),
        bot_said("Sorry, I didn't get that. Could you say it another way?"),
        person_said("how much is the team plan", "ask_price"),
        bot_said("Team is $35 per agent per month."),
    ]
    assert await fallback(before) == [SlotSet("fallback", "rephrase")]


async def test_a_second_misunderstanding_in_a_row_offers_a_person() -> None:
    before = [
        person_said("hi", "greet"),
        bot_said("Hi! I'm the Brightdesk assistant."),
        person_said("qwfp arst", "nlu_fallback"),
        {"event": "action", "name": "action_fallback"},
        {"event": "slot", "name": "fallback", "value": "rephrase"},
        bot_said("Sorry, I didn't get that. Could you say it another way?"),
        {"event": "action", "name": "action_listen"},
    ]
    assert await fallback(before) == [SlotSet("fallback", "offer_person")]


async def test_more_misunderstandings_keep_offering_a_person() -> None:
    before = [
        person_said("?", "nlu_fallback"),
        bot_said("Sorry, could you say it another way?"),
        person_said("??", "nlu_fallback"),
        bot_said("Would you like to talk to a person?"),
    ]
    assert await fallback(before) == [SlotSet("fallback", "offer_person")]


# -- products ----------------------------------------------------------------------------


async def note(
    entities: list[dict[str, Any]],
    slots: dict[str, Any] | None = None,
    text: str = "tell me about it",
    intent: str = "ask_product",
) -> list[Any]:
    tracker = conversation(SENDER, text, intent, entities, slots=slots)
    return await ActionNoteProduct(load_catalog()).run(CollectingDispatcher(), tracker, {})


@pytest.mark.parametrize(
    ("words", "product"),
    [("Team", "team"), ("team plan", "team"), ("BASIC", "starter"), ("ai add-on", "ai-assist")],
)
async def test_the_product_named_is_noted_by_name_or_synonym(words: str, product: str) -> None:
    assert await note([entity("product", words)]) == [
        SlotSet("product", product),
        SlotSet("product_named", "known"),
    ]


async def test_a_product_not_sold_clears_the_last_one() -> None:
    events = await note([entity("product", "Zendesk")], slots={"product": "team"})
    assert events == [SlotSet("product", None), SlotSet("product_named", "unknown")]


async def test_no_product_named_clears_the_last_one() -> None:
    assert await note([], slots={"product": "team"}) == [
        SlotSet("product", None),
        SlotSet("product_named", "no_product"),
    ]


async def test_of_two_products_named_the_first_known_one_is_noted() -> None:
    entities = [entity("product", "Zendesk"), entity("product", "business plan"),
                entity("product", "starter")]  # fmt: skip
    assert await note(entities) == [
        SlotSet("product", "business"),
        SlotSet("product_named", "known"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "how much does it cost?",
        "what are your prices?",
        "pricing?",
        "how much is it per agent",
        "how much for 10 agents",
        "how much does brightdesk cost",
        "what do your plans cost",
        "how much is it for our team",
        "what's the monthly price",
    ],
)
async def test_a_price_question_naming_no_product_is_about_every_price(text: str) -> None:
    events = await note([], text=text, intent="ask_price")
    assert events == [SlotSet("product", None), SlotSet("product_named", "no_product")]


@pytest.mark.parametrize(
    "text",
    [
        "how much is the Gold plan?",
        "what does the premium tier cost",
        "how much is Zendesk",
        "price of the platinum package",
    ],
)
def test_a_name_we_do_not_sell_is_an_unknown_product(text: str) -> None:
    assert names_unknown_product(text)


@pytest.mark.parametrize(
    "text", ["how much is it", "which plan is cheapest", "price of a seat", "how much for 5 users"]
)
def test_general_price_words_name_no_product(text: str) -> None:
    assert not names_unknown_product(text)


def test_the_price_answer_to_a_question_naming_no_product_lists_every_price() -> None:
    variations = product_responses(load_catalog())["utter_product_price"]
    every = [
        v
        for v in variations
        if v.get("condition") == [{"type": "slot", "name": "product_named", "value": "no_product"}]
    ]
    assert len(every) == 1
    assert every[0]["text"] == (
        "Our prices: Starter: $15 per agent per month; Team: $35 per agent per month; "
        "Business: $59 per agent per month; Enterprise: custom pricing; "
        "AI Assist: $10 per agent per month. Which would you like to know more about?"
    )


async def compare(*names: str) -> dict[str, Any]:
    tracker = conversation(SENDER, "compare them", "compare_products",
                           [entity("product", name) for name in names])  # fmt: skip
    events = await ActionCompareProducts(load_catalog()).run(CollectingDispatcher(), tracker, {})
    return {e["name"]: e["value"] for e in events}


async def test_two_products_are_compared_by_price_and_features() -> None:
    assert await compare("basic plan", "Team") == {
        "compare": "ready",
        "comparison": (
            "Starter is $15 per agent per month; Team is $35 per agent per month. "
            "Team has everything in Starter, SMS, assignment rules, automations, "
            "Slack integration. "
            "Starter has shared inbox, email, live chat, canned replies, basic reports."
        ),
    }


async def test_a_product_without_a_price_is_compared_as_custom_pricing() -> None:
    comparison = (await compare("business", "enterprise plan"))["comparison"]
    assert comparison.startswith(
        "Business is $59 per agent per month; Enterprise is custom pricing."
    )
    assert "Enterprise has everything in Business, success manager" in comparison


@pytest.mark.parametrize(
    "names",
    [(), ("team",), ("basic", "starter plan"), ("team", "Zendesk"), ("Zendesk", "Intercom")],
)
async def test_comparing_needs_two_different_products_we_sell(names: tuple[str, ...]) -> None:
    assert await compare(*names) == {"compare": "need_two", "comparison": None}


async def test_of_three_products_the_first_two_are_compared() -> None:
    comparison = (await compare("team", "business", "starter"))["comparison"]
    assert comparison.startswith("Team is $35 per agent per month; Business is $59")
    assert "Starter" not in comparison.replace("everything in Starter", "")


def test_a_product_question_naming_no_product_offers_a_person() -> None:
    variations = product_responses(load_catalog())["utter_product_info"]
    detail = [
        v
        for v in variations
        if v.get("condition") == [{"type": "slot", "name": "product_named", "value": "no_product"}]
    ]
    assert [v["text"] for v in detail] == [
        "That's more detail than I can give here, sorry. Someone from {business_name} can "
        'answer it: just say "talk to a person", or "book a demo" to see it for yourself.'
    ]
