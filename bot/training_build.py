"""Builds what Rasa trains on that is generated rather than written by hand.

`python -m bot.training_build OUT` writes into OUT:
- `spacy/`: a spaCy pipeline made here, not downloaded: `spacy.blank("en")` and an
  EntityRuler that finds the catalog's products (by name and synonym, any case), e-mail
  addresses, phone numbers and URLs;
- `domain/`: bot/domain/*.yml plus `catalog.yml` (FAQ answers as retrieval responses,
  and the business's name as a slot the bot's words can use);
- `data/`: data/nlu, data/rules and data/stories plus `nlu/catalog.yml` (FAQ questions
  as retrieval-intent examples, product synonyms).
`parley train` and `parley validate` run it, then hand OUT to Rasa.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import yaml

from bot.business import (
    ASKED,
    COMPARE_QUESTION,
    COMPARED,
    NO_PRODUCT,
    NOT_SOLD,
    PRODUCT_QUESTIONS,
    Business,
    Catalog,
    Product,
    load_business,
    load_catalog,
)
from bot.settings import PROJECT_ROOT

TRAINING_DATA = ("nlu", "rules", "stories")
DIGITS = r"^\d{%d,%d}$"

# Phone numbers as the blank English tokenizer splits them: "+14155550199",
# "415.555.0199", "(415) 555-0199", "+1 415 555 0199", "+44 7911 123456".
PHONE_PATTERNS: list[list[dict[str, Any]]] = [
    [{"TEXT": {"REGEX": r"^\+?\d[\d.\-]{8,16}\d$"}}],
    [
        {"TEXT": {"REGEX": r"^\+\d{1,3}$"}, "OP": "?"},
        {"TEXT": "(", "OP": "?"},
        {"TEXT": {"REGEX": DIGITS % (3, 3)}},
        {"TEXT": ")", "OP": "?"},
        {"TEXT": {"IN": ["-", "."]}, "OP": "?"},
        {"TEXT": {"REGEX": DIGITS % (3, 3)}},
        {"TEXT": {"IN": ["-", "."]}, "OP": "?"},
        {"TEXT": {"REGEX": DIGITS % (4, 4)}},
    ],
    [
        {"TEXT": {"REGEX": r"^\+\d{1,3}$"}},
        {"TEXT": {"REGEX": DIGITS % (2, 5)}},
        {"TEXT": {"REGEX": DIGITS % (3, 8)}},
        {"TEXT": {"REGEX": DIGITS % (3, 5)}, "OP": "?"},
    ],
]


# Product names that are everyday words ("Team", "Business") must not turn "our team"
# or "business hours" into a product. The ruler keeps the longest match, so these
# phrases are matched as `context` (which Rasa ignores) instead.
EVERYDAY_BEFORE = ["my", "our", "your", "their", "whole", "entire", "small", "own", "a"]
EVERYDAY_AFTER = [
    "size", "member", "members", "mates", "lead", "leads", "hours", "day", "days",
    "email", "address", "account", "owner", "owners", "name", "of", "reports", "report",
    "support", "needs", "questions", "question", "software", "tools",
]  # fmt: skip


def entity_patterns(catalog: Catalog) -> list[dict[str, Any]]:
    patterns: list[dict[str, Any]] = []
    for product in catalog.products:
        for name in dict.fromkeys([product.name, *product.synonyms]):
            patterns.append({"label": "product", "pattern": name, "id": product.id})
            if " " not in name:
                word = {"LOWER": name.lower()}
                patterns += [
                    {"label": "context", "pattern": [{"LOWER": {"IN": EVERYDAY_BEFORE}}, word]},
                    {"label": "context", "pattern": [word, {"LOWER": {"IN": EVERYDAY_AFTER}}]},
                ]
    patterns.append({"label": "email", "pattern": [{"LIKE_EMAIL": True}]})
    patterns.append({"label": "url", "pattern": [{"LIKE_URL": True}]})
    patterns += [{"label": "phone", "pattern": pattern} for pattern in PHONE_PATTERNS]
    return patterns


def build_spacy(catalog: Catalog, out: Path) -> None:
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    ruler.add_patterns(entity_patterns(catalog))  # type: ignore[attr-defined]
    nlp.meta["name"] = "parley_catalog"
    nlp.meta["description"] = "Blank English with an EntityRuler built from data/catalog.yml"
    nlp.to_disk(out)


def generated_nlu(catalog: Catalog) -> dict[str, Any]:
    nlu: list[dict[str, Any]] = []
    for faq in catalog.faq:
        nlu.append({"intent": f"faq/{faq.id}", "examples": _examples(faq.questions)})
    for product in catalog.products:
        names = [n for n in dict.fromkeys([product.name, *product.synonyms]) if n != product.id]
        nlu.append({"synonym": product.id, "examples": _examples(names)})
    return {"version": "3.1", "nlu": nlu}


def product_responses(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """Answers about products: one variation per product, chosen by the `product` slot
    (bot/product_questions.py); when a question named no product at all (`none`), every
    price, or for any other question the offer of a person; and a last one, with no
    condition, for a product we do not sell (`unknown`)."""
    names = _listing([p.name for p in catalog.products])
    unknown = (
        f"I'm not sure which product you mean. We offer {names}. If you are asking about "
        'something else, I can connect you with a person: just say "talk to a person".'
    )
    buttons = [
        {"title": p.name, "payload": f'/ask_product{{"product":"{p.id}"}}'}
        for p in catalog.products
    ]

    def variation(product_id: str, text: str) -> dict[str, Any]:
        return {
            "condition": [{"type": "slot", "name": "product", "value": product_id}],
            "text": text,
        }

    no_product = [{"type": "slot", "name": "product", "value": NO_PRODUCT}]

    price = [
        variation(p.id, f"{p.name} is {p.price_text(catalog.currency)}. {p.description}")
        for p in catalog.products
    ]
    info = [
        variation(
            p.id,
            f"{p.name}: {p.description} It includes {_listing(p.features)}. "
            f"Price: {p.price_text(catalog.currency)}.",
        )
        for p in catalog.products
    ]
    listing = "; ".join(f"{p.name} ({p.price_text(catalog.currency)})" for p in catalog.products)
    # A price question that names no product ("how much is it?") gets every price.
    prices = "; ".join(f"{p.name}: {p.price_text(catalog.currency)}" for p in catalog.products)
    every_price = {
        "condition": no_product,
        "text": f"Our prices: {prices}. Which would you like to know more about?",
        "buttons": buttons,
    }
    # A question about the product that names no plan ("can agents undo a reply?"):
    # the catalog cannot answer it, a person can.
    detail = {
        "condition": no_product,
        "text": (
            "That's more detail than I can give here, sorry. Someone from {business_name} "
            'can answer it: just say "talk to a person", or "book a demo" to see it for '
            "yourself."
        ),
    }
    return {
        "utter_product_price": [*price, every_price, {"text": unknown, "buttons": buttons}],
        "utter_product_info": [*info, detail, {"text": unknown, "buttons": buttons}],
        "utter_product_list": [
            {
                "text": f"We offer {listing}. Which would you like to know more about?",
                "buttons": buttons,
            }
        ],
    }


def comparison_responses(catalog: Catalog) -> dict[str, list[dict[str, Any]]]:
    """The comparison of two products: one variation per ordered pair, chosen by the
    `first_product` and `second_product` slots (bot/product_questions.py); with fewer
    than two of ours named, the question which two."""
    pairs = [
        {
            "condition": [
                {"type": "slot", "name": "first_product", "value": first.id},
                {"type": "slot", "name": "second_product", "value": second.id},
            ],
            "text": comparison(first, second, catalog.currency),
        }
        for first in catalog.products
        for second in catalog.products
        if first.id != second.id
    ]
    example = " and ".join(p.name for p in catalog.products[:2])
    which = f'Which two plans would you like me to compare? For example: "compare {example}".'

    return {"utter_comparison": [*pairs, {"text": which}]}


def comparison(first: Product, second: Product, currency: str) -> str:
    """Prices, then what each has that the other has not."""
    prices = f"{first.name} is {first.price_text(currency)}; "
    parts = [prices + f"{second.name} is {second.price_text(currency)}."]
    only_second = [f for f in second.features if f not in first.features]
    only_first = [f for f in first.features if f not in second.features]
    if only_second:
        parts.append(f"{second.name} has {', '.join(only_second)}.")
    if only_first:
        parts.append(f"{first.name} has {', '.join(only_first)}.")
    return " ".join(parts)


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def generated_domain(business: Business, catalog: Catalog) -> dict[str, Any]:
    ids = [p.id for p in catalog.products]
    asking = list(PRODUCT_QUESTIONS)
    return {
        "version": "3.1",
        "intents": ["faq"],
        # A `product` in a role is one a question is about, as bot/product_questions.py
        # reads it: the one asked about, or the two to compare.
        "entities": [{"product": {"roles": [ASKED, *COMPARED]}}, "email", "phone", "url"],
        "slots": {
            "business_name": {
                "type": "text",
                "initial_value": business.name,
                "influence_conversation": False,
                "mappings": [{"type": "custom"}],
            },
            # The product this price or product question is about (a catalog id),
            # `unknown` for one we do not sell, `none` when it named none: from
            # bot/product_questions.py's reading, a button's payload, or else `none`.
            "product": {
                "type": "categorical",
                "values": [*ids, NOT_SOLD, NO_PRODUCT],
                "influence_conversation": False,
                "mappings": [
                    {"type": "from_entity", "entity": "product", "role": ASKED},
                    {"type": "from_entity", "entity": "product", "intent": asking},
                    {"type": "from_intent", "intent": asking, "value": NO_PRODUCT},
                ],
            },
            # The two products to compare, or `none` with fewer than two of ours named.
            **{
                f"{role}_product": {
                    "type": "categorical",
                    "values": [*ids, NO_PRODUCT],
                    "influence_conversation": False,
                    "mappings": [
                        {"type": "from_entity", "entity": "product", "role": role},
                        {"type": "from_intent", "intent": [COMPARE_QUESTION], "value": NO_PRODUCT},
                    ],
                }
                for role in COMPARED
            },
        },
        "responses": {
            **{f"utter_faq/{faq.id}": [{"text": faq.answer}] for faq in catalog.faq},
            **product_responses(catalog),
            **comparison_responses(catalog),
        },
    }


def _examples(lines: list[str]) -> str:
    return "".join(f"- {line}\n" for line in lines)


def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Generated by bot/training_build.py from data/business.yml and data/catalog.yml.\n"
    path.write_text(
        text + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=1000)
    )


def build(out: Path, root: Path = PROJECT_ROOT) -> None:
    business = load_business(root / "data")
    catalog = load_catalog(root / "data")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(root / "bot" / "domain", out / "domain")
    for folder in TRAINING_DATA:
        shutil.copytree(root / "data" / folder, out / "data" / folder)
    _write(out / "domain" / "catalog.yml", generated_domain(business, catalog))
    _write(out / "data" / "nlu" / "catalog.yml", generated_nlu(catalog))
    build_spacy(catalog, out / "spacy")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bot.training_build")
    parser.add_argument("out", type=Path)
    build(parser.parse_args().out.resolve())


if __name__ == "__main__":
    main()
