"""Which products a question is about: ProductQuestions' reading of a message, the slots
Rasa's own slot extraction fills from it (with the domain `parley train` builds), and
the one answer those slots choose. The phrasings are this test's own."""

from __future__ import annotations

from typing import Any

import pytest
from rasa.core.actions.action import ActionExtractSlots
from rasa.core.channels import CollectingOutputChannel
from rasa.core.nlg.generator import ResponseVariationFilter
from rasa.core.nlg.response import TemplatedNaturalLanguageGenerator
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import ENTITIES, INTENT, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.business import Catalog, load_business, load_catalog
from bot.product_questions import ProductQuestions, product_asked, unknown_product_named
from bot.settings import PROJECT_ROOT
from bot.training_build import generated_domain

CATALOG = load_catalog()
SLOTS = ("product", "first_product", "second_product")


def product(name: str, start: int = 0) -> dict[str, Any]:
    """A `product` entity as NLU gives it (the EntityRuler's text, or DIET's)."""
    return {"entity": "product", "value": name, "start": start, "end": start + len(name)}


def named(text: str, *names: str) -> list[dict[str, Any]]:
    """`product` entities for `names` where they stand in `text`."""
    return [product(name, text.index(name)) for name in names]


def read(text: str, entities: list[dict[str, Any]], intent: str) -> list[dict[str, Any]]:
    message = Message({TEXT: text, INTENT: {"name": intent, "confidence": 0.9}})
    message.set(ENTITIES, entities)
    ProductQuestions(CATALOG).process([message])
    return list(message.get(ENTITIES))


def asked(text: str, entities: list[dict[str, Any]]) -> str | None:
    found = product_asked(text, entities, CATALOG)
    return None if found is None else found["value"]


@pytest.fixture(scope="module")
def domain() -> Domain:
    built = Domain.from_dict(generated_domain(load_business(), CATALOG))
    return Domain.load(str(PROJECT_ROOT / "bot" / "domain")).merge(built)


async def slots_after(
    domain: Domain,
    text: str,
    intent: str,
    entities: list[dict[str, Any]],
    before: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The product slots after Rasa's slot extraction runs on this message (as parsed:
    run `read` first for a typed message)."""
    events: list[Any] = [SlotSet(k, v) for k, v in (before or {}).items()]
    events += [
        ActionExecuted("action_listen"),
        UserUttered(text, {"name": intent, "confidence": 0.9}, entities),
    ]
    tracker = DialogueStateTracker.from_events("product-questions", events, domain.slots)
    nlg = TemplatedNaturalLanguageGenerator(domain.responses)
    found = await ActionExtractSlots(None).run(CollectingOutputChannel(), nlg, tracker, domain)
    for event in found:
        tracker.update(event)
    return {name: tracker.get_slot(name) for name in SLOTS}


def answers(domain: Domain, utterance: str, slots: dict[str, Any]) -> list[str]:
    """Every variation of `utterance` these slots choose: Rasa picks one at random."""
    chosen = ResponseVariationFilter(domain.responses).responses_for_utter_action(
        utterance, "rest", slots
    )
    return [variation["text"] for variation in chosen]


async def answer(
    domain: Domain,
    text: str,
    intent: str,
    names: tuple[str, ...] = (),
    before: dict[str, str] | None = None,
) -> str:
    """What the bot says to a typed message NLU read as `intent` with these product
    names, as it says it: ProductQuestions, slot extraction, then the rule's response."""
    entities = read(text, named(text, *names), intent)
    slots = await slots_after(domain, text, intent, entities, before)
    utterance = {
        "ask_price": "utter_product_price",
        "ask_product": "utter_product_info",
        "compare_products": "utter_comparison",
    }[intent]
    [said] = answers(domain, utterance, slots)
    return said


# -- which product a price or product question is about ----------------------------------


@pytest.mark.parametrize(
    ("words", "product_id"),
    [("Team", "team"), ("team plan", "team"), ("BASIC", "starter"), ("ai add-on", "ai-assist")],
)
def test_a_product_is_read_by_name_or_synonym(words: str, product_id: str) -> None:
    text = f"how much is {words}"
    entities = read(text, named(text, words), "ask_price")
    assert entities == [
        product(words, 12),  # what NLU heard is kept as it was
        {
            "entity": "product",
            "role": "asked",
            "value": product_id,
            "start": 12,
            "end": 12 + len(words),
            "extractor": "ProductQuestions",
        },
    ]


def test_of_several_names_the_first_product_we_sell_is_the_one_asked() -> None:
    text = "zendesk or business plan or starter"
    assert asked(text, named(text, "zendesk", "business plan", "starter")) == "business"


def test_a_name_we_do_not_sell_is_read_as_unknown() -> None:
    assert asked("how much is Zendesk", [product("Zendesk", 12)]) == "unknown"


@pytest.mark.parametrize(
    "text",
    [
        "how much is the Gold plan?",
        "what does the premium tier cost",
        "how much is Zendesk",
        "price of the platinum package",
        "what's the pricing for the ultra edition",
    ],
)
def test_a_name_no_extractor_knew_is_read_as_unknown(text: str) -> None:
    assert asked(text, []) == "unknown"


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
        "which plan is cheapest",
        "price of a seat",
        "how much for 5 users",
    ],
)
def test_a_question_naming_no_product_is_read_as_none(text: str) -> None:
    assert asked(text, []) is None
    assert unknown_product_named(text) is None


def test_our_own_plan_is_no_unknown_product() -> None:
    # The EntityRuler missed "Team" here; the words "Team plan" still name no stranger.
    assert asked("how much is the Team plan", []) is None


@pytest.mark.parametrize("intent", ["greet", "nlu_fallback", "opt_out", "list_products"])
def test_other_messages_are_left_as_they_are(intent: str) -> None:
    text = "team and starter"
    assert read(text, named(text, "team", "starter"), intent) == named(text, "team", "starter")


# -- the answer ---------------------------------------------------------------------------


async def test_a_price_question_is_answered_for_the_product_it_names(domain: Domain) -> None:
    said = await answer(domain, "how much is zendesk or Team", "ask_price", ("zendesk", "Team"),
                        before={"product": "starter"})  # fmt: skip
    assert said.startswith("Team is $35 per agent per month.")


async def test_a_product_we_do_not_sell_gets_the_honest_answer(domain: Domain) -> None:
    said = await answer(
        domain, "how much is the Gold plan?", "ask_price", before={"product": "team"}
    )
    assert said.startswith("I'm not sure which product you mean. We offer Starter, Team,")


async def test_a_price_question_naming_no_product_gets_every_price(domain: Domain) -> None:
    said = await answer(domain, "what are your prices?", "ask_price", before={"product": "team"})
    assert said == (
        "Our prices: Starter: $15 per agent per month; Team: $35 per agent per month; "
        "Business: $59 per agent per month; Enterprise: custom pricing; "
        "AI Assist: $10 per agent per month. Which would you like to know more about?"
    )


async def test_a_product_question_naming_no_product_offers_a_person(domain: Domain) -> None:
    said = await answer(
        domain, "can agents undo a reply?", "ask_product", before={"product": "team"}
    )
    assert said == (
        "That's more detail than I can give here, sorry. Someone from {business_name} can "
        'answer it: just say "talk to a person", or "book a demo" to see it for yourself.'
    )


async def test_a_button_names_its_product_itself(domain: Domain) -> None:
    # `/ask_product{"product":"business"}` skips NLU: the payload's entity fills the slot.
    payload = [{"entity": "product", "value": "business"}]
    text = '/ask_product{"product":"business"}'
    slots = await slots_after(domain, text, "ask_product", payload, {"product": "team"})
    assert slots["product"] == "business"
    slots = await slots_after(domain, "/ask_price", "ask_price", [], {"product": "team"})
    assert slots["product"] == "none"


async def test_two_products_are_compared_by_price_and_features(domain: Domain) -> None:
    said = await answer(domain, "compare basic plan and Team", "compare_products",
                        ("basic plan", "Team"))  # fmt: skip
    assert said == (
        "Starter is $15 per agent per month; Team is $35 per agent per month. "
        "Team has everything in Starter, SMS, assignment rules, automations, "
        "Slack integration. "
        "Starter has shared inbox, email, live chat, canned replies, basic reports."
    )


async def test_a_product_without_a_price_is_compared_as_custom_pricing(domain: Domain) -> None:
    said = await answer(domain, "business vs enterprise plan", "compare_products",
                        ("business", "enterprise plan"))  # fmt: skip
    assert said.startswith("Business is $59 per agent per month; Enterprise is custom pricing.")
    assert "Enterprise has everything in Business, success manager" in said


@pytest.mark.parametrize(
    "names",
    [(), ("team",), ("basic", "starter plan"), ("team", "Zendesk"), ("Zendesk", "Intercom")],
)
async def test_comparing_needs_two_different_products_we_sell(
    domain: Domain, names: tuple[str, ...]
) -> None:
    text = "compare " + " and ".join(names)
    said = await answer(domain, text, "compare_products", names,
                        before={"first_product": "team", "second_product": "business"})  # fmt: skip
    assert (
        said
        == 'Which two plans would you like me to compare? For example: "compare Starter and Team".'
    )


async def test_of_three_products_the_first_two_are_compared(domain: Domain) -> None:
    text = "team, business or starter?"
    said = await answer(domain, text, "compare_products", ("team", "business", "starter"))
    assert said.startswith("Team is $35 per agent per month; Business is $59")
    assert "Starter" not in said.replace("everything in Starter", "")


async def test_other_questions_leave_the_product_slots_alone(domain: Domain) -> None:
    before = {"product": "team", "first_product": "team", "second_product": "business"}
    text = "what plans do you have, team and starter?"
    slots = await slots_after(domain, text, "list_products", named(text, "team", "starter"), before)
    assert slots == before


@pytest.mark.parametrize(
    ("utterance", "slot", "values"),
    [
        ("utter_product_price", "product", [*(p.id for p in CATALOG.products), "unknown", "none"]),
        ("utter_product_info", "product", [*(p.id for p in CATALOG.products), "unknown", "none"]),
    ],
)
def test_each_slot_value_chooses_exactly_one_answer(
    domain: Domain, utterance: str, slot: str, values: list[str]
) -> None:
    for value in values:
        assert len(answers(domain, utterance, {slot: value})) == 1, value


def test_each_pair_of_products_chooses_exactly_one_comparison(domain: Domain) -> None:
    ids = [p.id for p in CATALOG.products] + ["none"]
    for first in ids:
        for second in ids:
            slots = {"first_product": first, "second_product": second}
            [said] = answers(domain, "utter_comparison", slots)
            if "none" in (first, second) or first == second:
                assert said.startswith("Which two plans")
            else:
                names = [CATALOG.find(first).name, CATALOG.find(second).name]  # type: ignore[union-attr]
                assert said.startswith(f"{names[0]} is ") and f"; {names[1]} is " in said


@pytest.mark.parametrize("reserved", ["none", "unknown"])
def test_no_product_may_take_a_slots_own_values(reserved: str) -> None:
    data = CATALOG.dict()
    data["products"][0]["id"] = reserved
    with pytest.raises(ValueError, match="kept for questions about no product"):
        Catalog.parse_obj(data)
