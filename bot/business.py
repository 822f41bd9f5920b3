"""The business the bot speaks for (data/business.yml) and what it sells
(data/catalog.yml), read and checked once.

Training uses these to generate product patterns, FAQ answers and the business's name
in the bot's words; the action server uses them to answer product questions and to
offer demo slots in business hours.
"""

from __future__ import annotations

import re
from datetime import time
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, Field, validator

from bot.settings import PROJECT_ROOT

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Strict(BaseModel):
    class Config:
        extra = "forbid"
        allow_mutation = False


class Contact(_Strict):
    email: str
    phone: str


class Demo(_Strict):
    minutes: int = Field(30, ge=10, le=180)
    book_days_ahead: int = Field(14, ge=1, le=90)


Hours = dict[str, tuple[str, str]]


def _check_hours(value: dict[str, Any]) -> dict[str, Any]:
    for day, span in value.items():
        if day not in WEEKDAYS:
            raise ValueError(f"{day!r} is not a weekday (monday … sunday)")
        if len(span) != 2 or not all(_HHMM.match(str(t)) for t in span) or span[0] >= span[1]:
            raise ValueError(f'{day}: give opening and closing times as ["09:00", "17:00"]')
    return value


class Business(_Strict):
    name: str = Field(..., min_length=1, max_length=80)
    tagline: str
    sells: str
    website: str
    contact: Contact
    address: str
    timezone: str
    opening_hours: Hours
    demo: Demo = Demo()
    handoff_hours: Hours
    sms_help: str = Field(..., max_length=320)
    privacy_policy: str
    # Quiet hours and frequency caps for every marketing message, and how long data is
    # kept: read and checked by the backend (backend/messaging/guards.py ContactRules,
    # backend/people/retention.py RetentionPolicy), not by the bot.
    follow_ups: dict[str, Any] = {}
    retention: dict[str, Any] = {}

    _hours = validator("opening_hours", "handoff_hours", allow_reuse=True)(_check_hours)

    @validator("timezone")
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"{value!r} is not an IANA time zone") from error
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hours_on(self, weekday: int, which: str = "opening_hours") -> tuple[time, time] | None:
        """Opening (or hand-off) hours on a weekday (0 = Monday), in the business's zone."""
        span = getattr(self, which).get(WEEKDAYS[weekday])
        if not span:
            return None
        return time.fromisoformat(span[0]), time.fromisoformat(span[1])


# How the dialogue names the products a question is about (bot/product_questions.py):
# the questions, the roles of the `product` entities read from them, and what a slot
# holds when the question is not about one of ours (so no product may have these ids).
PRODUCT_QUESTIONS = ("ask_price", "ask_product")
COMPARE_QUESTION = "compare_products"
ASKED = "asked"
COMPARED = ("first", "second")
NOT_SOLD = "unknown"
NO_PRODUCT = "none"


class Product(_Strict):
    id: str = Field(..., regex=r"^[a-z0-9][a-z0-9\-]{0,40}$")
    name: str
    synonyms: list[str] = []
    description: str
    price: float | None = Field(None, ge=0)
    unit: str
    features: list[str] = []

    @validator("id")
    def _not_reserved(cls, value: str) -> str:
        if value in (NOT_SOLD, NO_PRODUCT):
            raise ValueError(f"{value!r} is kept for questions about no product of ours")
        return value

    def price_text(self, currency: str) -> str:
        if self.price is None:
            return self.unit
        amount = f"{self.price:,.0f}" if self.price == int(self.price) else f"{self.price:,.2f}"
        symbol = "$" if currency == "USD" else f"{currency} "
        return f"{symbol}{amount} {self.unit}"


class Faq(_Strict):
    id: str = Field(..., regex=r"^[a-z][a-z0-9_]{0,40}$")
    questions: list[str] = Field(..., min_items=4)
    answer: str


class Catalog(_Strict):
    currency: str = Field("USD", regex=r"^[A-Z]{3}$")
    products: list[Product] = Field(..., min_items=1)
    faq: list[Faq] = []

    @validator("products")
    def _unique_names(cls, products: list[Product]) -> list[Product]:
        seen: dict[str, str] = {}
        for product in products:
            for name in [product.name, *product.synonyms]:
                key = name.lower()
                if key in seen and seen[key] != product.id:
                    raise ValueError(f"{name!r} names both {seen[key]} and {product.id}")
                seen[key] = product.id
        return products

    def find(self, name: str) -> Product | None:
        """The product called `name` (its id, name or a synonym, any case)."""
        key = name.strip().lower()
        for product in self.products:
            if key in (product.id, product.name.lower(), *(s.lower() for s in product.synonyms)):
                return product
        return None


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected key: value lines")
    return data


@lru_cache(maxsize=4)
def load_business(data_dir: Path = PROJECT_ROOT / "data") -> Business:
    return Business.parse_obj(_read(data_dir / "business.yml"))


@lru_cache(maxsize=4)
def load_catalog(data_dir: Path = PROJECT_ROOT / "data") -> Catalog:
    return Catalog.parse_obj(_read(data_dir / "catalog.yml"))
