"""The two-stage fallback (rephrase, then offer a person) and the product actions (which
product was named, and comparing two of them from data/catalog.yml)."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.fallback import ActionFallback
from actions.products import ActionCompareProducts, ActionNoteProduct
from bot.business import load_catalog
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


async def note(entities: list[dict[str, Any]], slots: dict[str, Any] | None = None) -> list[Any]:
    tracker = conversation(SENDER, "tell me about it", "ask_product", entities, slots=slots)
    return await ActionNoteProduct(load_catalog()).run(CollectingDispatcher(), tracker, {})


@pytest.mark.parametrize(
    ("words", "product"),
    [("Team", "team"), ("team plan", "team"), ("BASIC", "starter"), ("ai add-on", "ai-assist")],
)
async def test_the_product_named_is_noted_by_name_or_synonym(words: str, product: str) -> None:
    assert await note([entity("product", words)]) == [SlotSet("product", product)]


async def test_a_product_not_sold_clears_the_last_one() -> None:
    events = await note([entity("product", "Zendesk")], slots={"product": "team"})
    assert events == [SlotSet("product", None)]


async def test_no_product_named_clears_the_last_one() -> None:
    assert await note([], slots={"product": "team"}) == [SlotSet("product", None)]


async def test_of_two_products_named_the_first_known_one_is_noted() -> None:
    entities = [entity("product", "Zendesk"), entity("product", "business plan"),
                entity("product", "starter")]  # fmt: skip
    assert await note(entities) == [SlotSet("product", "business")]


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
