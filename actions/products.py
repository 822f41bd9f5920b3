"""Products: note which product the person just named (the words of the answer are
generated from data/catalog.yml into the domain), and compare two products."""

from __future__ import annotations

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


class ActionNoteProduct(Action):
    """Sets `product` to the product named in this message, or clears it, so that a
    question about something unknown gets the honest answer, not the last product's."""

    def __init__(self, catalog: Catalog | None = None) -> None:
        self._catalog = catalog

    def name(self) -> str:
        return "action_note_product"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        products = named_products(tracker, self._catalog or load_catalog())
        return [SlotSet("product", products[0].id if products else None)]


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
