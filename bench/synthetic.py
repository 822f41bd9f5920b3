"""Synthetic people for benchmarks: profiles, identities, events and consent, generated
from a seed so every run loads the same data."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.scoring.rules import Scored, ScoringRules

FIRST_NAMES = ["Ada", "Grace", "Linus", "Margaret", "Alan", "Priya", "Wei", "Olga", "Diego", "Noor"]
PLANS = (["free"] * 50) + (["starter"] * 30) + (["team"] * 15) + (["business"] * 5)
PATHS = ["/pricing", "/blog", "/features", "/docs"]


@dataclass
class Person:
    id: uuid.UUID
    first_name: str
    email: str | None
    company: str | None
    attributes: dict[str, Any]
    identity: tuple[str, str]
    created_at: datetime
    events: list[tuple[str, dict[str, Any], datetime]] = field(default_factory=list)
    consent: list[tuple[str, str, str]] = field(default_factory=list)  # channel, purpose, state
    score_events: float = 0.0


def people(count: int, now: datetime, seed: int = 7) -> Iterator[Person]:
    rng = random.Random(seed)
    for n in range(count):
        created = now - timedelta(days=rng.uniform(0, 365))
        sms = n % 2 == 0
        person = Person(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            first_name=rng.choice(FIRST_NAMES),
            email=f"person{n}@example.com" if rng.random() < 0.6 else None,
            company=f"Company {n % 5000}" if rng.random() < 0.4 else None,
            attributes={
                "plan": rng.choice(PLANS),
                "team_size": int(rng.lognormvariate(2.5, 1.1)) + 1,
            },
            identity=("sms", f"+1555{n:07d}") if sms else ("web", f"session-{n}"),
            created_at=created,
        )
        for _ in range(rng.choice((0, 1, 2, 3, 4, 5))):
            at = now - timedelta(days=rng.uniform(0, 90))
            person.events.append(("page_viewed", {"path": rng.choice(PATHS)}, at))
        if rng.random() < 0.2:
            person.events.append(("trial_started", {}, now - timedelta(days=rng.uniform(0, 60))))
        if rng.random() < 0.05:
            person.events.append(("demo_booked", {}, now - timedelta(days=rng.uniform(0, 60))))
        roll = rng.random()
        if sms and roll < 0.3:
            person.consent.append(("sms", "marketing", "granted"))
        elif sms and roll < 0.4:
            person.consent.append(("sms", "marketing", "withdrawn"))
        if person.email and rng.random() < 0.4:
            person.consent.append(("email", "marketing", "granted"))
        yield person


def score(person: Person, rules: ScoringRules) -> float:
    total = 0.0
    for type_, properties, at in person.events:
        event = Scored(person.id, type_, properties, at)
        for rule in rules.events:
            if rule.matches(event.type, event.properties):
                total += rules.scaled(rule.points, at)
    return total


def as_json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


EPOCH_NOW = datetime(2026, 11, 1, tzinfo=UTC)
