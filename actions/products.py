"""Products: note which product the person just named (the words of the answer are
generated from data/catalog.yml into the domain), and compare two products."""

from __future__ import annotations

import re
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from bot.business import Catalog, Product, load_catalog


def named_products(tracker: Tracker, catalog: Catalog) -> list[Product]:
    """The known products in the latest message, in the order named, without repeats."""
    found: dict[str, Product] = {}
    for value in tracker.get_latest_entity_values("product"):
        product = catalog.find(str(value))
        if product is not None:
            found.setdefault(product.id, product)
    return list(found.values())


# Words that name no product of their own in "how much is X", "the X plan", "price of X".
_GENERIC_WORDS = """
    a an the it its this that these those your you ur u yours our my each every per one
    any all which what whats what's cheapest cheaper cheap best whole entire other
    different paid free monthly annual yearly month year day week seat seats user users
    agent agents person people licence license licenses licences plan plans tier tiers
    package packages product products pricing price prices cost costs subscription
    everything everyone there here he she they for to of in on at with brightdesk
"""
GENERIC_WORDS = frozenset(_GENERIC_WORDS.split())
_THING = r"(?P<thing>[a-z0-9][\w+-]*)"
UNKNOWN_PRODUCT_PATTERNS = (
    # "the Gold plan", "a platinum tier", "your premium add-on"
    re.compile(_THING + r"\s+(?:plan|tier|package|edition|bundle|add-?on|addon|version)s?\b", re.I),
    # "how much is Zendesk", "how much for the gold package"
    re.compile(
        r"\bhow much (?:is|are|does|do|for|would)\s+(?:the |a |an |your |ur )?" + _THING, re.I
    ),
    # "price of Freshdesk", "pricing for the premium one"
    re.compile(
        r"\b(?:price|pricing|cost)s?\s+(?:of|for)\s+(?:the |a |an |your |ur )?" + _THING, re.I
    ),
)


def names_unknown_product(text: str) -> bool:
    """Whether `text` asks about something by a name that is not one of ours ("how much
    is the Gold plan?"), not just about prices in general ("how much is it?")."""
    for pattern in UNKNOWN_PRODUCT_PATTERNS:
        for match in pattern.finditer(text):
            thing = match.group("thing").lower()
            if thing not in GENERIC_WORDS and not thing.isdigit():
                return True
    return False


class ActionNoteProduct(Action):
    """Sets `product` to the product named in this message, or clears it, so that a
    question about something unknown gets the honest answer, not the last product's;
    and `product_named` to whether a product of ours was named (`known`), something we
    do not sell (`unknown`) or no product at all (`no_product`: a price question then
    gets every plan's price)."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog

    def name(self) -> str:
        return "action_note_product"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        catalog = self._catalog or load_catalog()
        products = named_products(tracker, catalog)
        if products:
            return [SlotSet("product", products[0].id), SlotSet("product_named", "known")]
        values = list(tracker.get_latest_entity_values("product"))
        text = str(tracker.latest_message.get("text") or "")
        for product in catalog.products:  # the plans we sell are no unknown product
            for name in (product.name, *product.synonyms):
                text = re.sub(rf"\b{re.escape(name)}\b", " ", text, flags=re.I)
        named = "unknown" if values or names_unknown_product(text) else "no_product"
        return [SlotSet("product", None), SlotSet("product_named", named)]


class ActionCompareProducts(Action):
    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog

    def name(self) -> str:
        return "action_compare_products"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        catalog = self._catalog or load_catalog()
        products = named_products(tracker, catalog)
        if len(products) < 2:
            return [SlotSet("compare", "need_two"), SlotSet("comparison", None)]
        return [SlotSet("compare", "ready"), SlotSet("comparison", compare(products[:2], catalog))]


def compare(products: list[Product], catalog: Catalog) -> str:
    first, second = products
    currency = catalog.currency
    prices = (
        f"{first.name} is {first.price_text(currency)}; "
        f"{second.name} is {second.price_text(currency)}."
    )
    only_first = [f for f in first.features if f not in second.features]
    only_second = [f for f in second.features if f not in first.features]
    parts = [prices]
    if only_second:
        parts.append(f"{second.name} has {', '.join(only_second)}.")
    if only_first:
        parts.append(f"{first.name} has {', '.join(only_first)}.")
    return " ".join(parts)
