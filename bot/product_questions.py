"""Which products a question is about, read in Rasa's own process.

A price or product question about one product gets that product's answer; about
something we do not sell, the honest "I'm not sure which product you mean"; about no
product at all ("how much is it?"), every price. A request to compare gets the two
products side by side, or, with fewer than two of ours named, the question which two.
Each answer is a variation of a response generated from data/catalog.yml
(bot/training_build.py), chosen by slots that must say this message's products, never
the last message's.

`ProductQuestions` runs last in the NLU pipeline (config.yml) and adds `product`
entities in a role to what NLU found:
- to a message read as `ask_price` or `ask_product`, one in the role `asked`: the id of
  the first product of ours it names, or `unknown` for a name we do not sell ("how much
  is the Gold plan?", "price of Zendesk");
- to a message read as `compare_products`, the first two different products of ours it
  names, in the roles `first` and `second`.
The slots' mappings (bot/training_build.py) take these; a button's payload
(`/ask_product{"product":"team"}`) names its product itself; and a question naming no
product (or fewer than two to compare) sets `none`.

Doing this here rather than in custom actions saves such a turn a round trip to the
action server and a second policy prediction: docs/scaling.md, "What a turn costs".
"""

from __future__ import annotations

import re
from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.nlu.constants import (
    ENTITIES,
    ENTITY_ATTRIBUTE_END,
    ENTITY_ATTRIBUTE_ROLE,
    ENTITY_ATTRIBUTE_START,
    ENTITY_ATTRIBUTE_TYPE,
    ENTITY_ATTRIBUTE_VALUE,
    EXTRACTOR,
    INTENT,
    TEXT,
)
from rasa.shared.nlu.training_data.message import Message

from bot.business import (
    ASKED,
    COMPARE_QUESTION,
    COMPARED,
    NOT_SOLD,
    PRODUCT_QUESTIONS,
    Catalog,
    load_catalog,
)

Entity = dict[str, Any]

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


def unknown_product_named(text: str) -> re.Match[str] | None:
    """Where `text` asks about something by a name that is not one of ours ("how much is
    the Gold plan?"), not just about prices in general ("how much is it?"); or None."""
    for pattern in UNKNOWN_PRODUCT_PATTERNS:
        for match in pattern.finditer(text):
            thing = match.group("thing").lower()
            if thing not in GENERIC_WORDS and not thing.isdigit():
                return match
    return None


def without_our_names(text: str, catalog: Catalog) -> str:
    """`text` with the names of the plans we sell blanked out (same length), so that
    "the Team plan" names no unknown product."""
    for product in catalog.products:
        for name in (product.name, *product.synonyms):
            pattern = rf"\b{re.escape(name)}\b"
            text = re.sub(pattern, lambda m: " " * len(m.group()), text, flags=re.I)
    return text


def _named(entities: list[Entity]) -> list[Entity]:
    """The `product` entities NLU found (in no role: not one of ours from before)."""
    return [
        e
        for e in entities
        if e.get(ENTITY_ATTRIBUTE_TYPE) == "product" and not e.get(ENTITY_ATTRIBUTE_ROLE)
    ]


def _ours(entities: list[Entity], catalog: Catalog) -> list[tuple[str, Entity]]:
    """The products of ours that NLU's `product` entities name, in the order named,
    without repeats: each id with the first entity naming it."""
    found: dict[str, Entity] = {}
    for entity in _named(entities):
        product = catalog.find(str(entity.get(ENTITY_ATTRIBUTE_VALUE) or ""))
        if product is not None:
            found.setdefault(product.id, entity)
    return list(found.items())


def product_asked(text: str, entities: list[Entity], catalog: Catalog) -> Entity | None:
    """The `product` in the role `asked` for a question with these entities: the first
    product of ours named, else `unknown` for a name we do not sell; None when the
    question names no product."""
    ours = _ours(entities, catalog)
    if ours:
        product_id, entity = ours[0]
        return _in_role(ASKED, product_id, entity)
    named = _named(entities)
    if named:
        return _in_role(ASKED, NOT_SOLD, named[0])
    match = unknown_product_named(without_our_names(text, catalog))
    if match is not None:
        where = {
            ENTITY_ATTRIBUTE_START: match.start("thing"),
            ENTITY_ATTRIBUTE_END: match.end("thing"),
        }
        return _in_role(ASKED, NOT_SOLD, where)
    return None


def products_compared(entities: list[Entity], catalog: Catalog) -> list[Entity]:
    """The `product`s in the roles `first` and `second` for a request to compare with
    these entities: the first two different products of ours named; none with fewer."""
    ours = _ours(entities, catalog)[:2]
    if len(ours) < 2:
        return []
    return [_in_role(role, id_, e) for role, (id_, e) in zip(COMPARED, ours, strict=True)]


def _in_role(role: str, value: str, where: Entity) -> Entity:
    return {
        ENTITY_ATTRIBUTE_TYPE: "product",
        ENTITY_ATTRIBUTE_ROLE: role,
        ENTITY_ATTRIBUTE_VALUE: value,
        ENTITY_ATTRIBUTE_START: where.get(ENTITY_ATTRIBUTE_START),
        ENTITY_ATTRIBUTE_END: where.get(ENTITY_ATTRIBUTE_END),
        EXTRACTOR: ProductQuestions.__name__,
    }


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR], is_trainable=False)
class ProductQuestions(GraphComponent):
    """Last in the pipeline (config.yml): see the module's doc."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> ProductQuestions:
        return cls(load_catalog())

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            intent = (message.get(INTENT) or {}).get("name")
            entities = list(message.get(ENTITIES) or [])
            if intent in PRODUCT_QUESTIONS:
                asked = product_asked(str(message.get(TEXT) or ""), entities, self._catalog)
                added = [] if asked is None else [asked]
            elif intent == COMPARE_QUESTION:
                added = products_compared(entities, self._catalog)
            else:
                continue
            if added:
                message.set(ENTITIES, [*entities, *added], add_to_output=True)
        return messages
