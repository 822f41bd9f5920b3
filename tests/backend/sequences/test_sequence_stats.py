"""A sequence's results (`GET /api/v1/sequences/{id}/stats`): people enrolled, texted,
replying, reaching the goal and opting out, per send step and variant, and each
variant's lift over the holdout. The worker runs one tick at a time against the Twilio
emulator (SQLite and PostgreSQL)."""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import literal, select

from backend.api.keys import SEQUENCES, WORKER
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.database import create_engine
from backend.core.models import Document
from backend.core.settings import PROJECT_ROOT
from backend.sequences.definition import SendStep
from backend.sequences.enrolment import matches
from backend.sequences.lift import difference_interval, wilson_interval
from backend.sequences.results import property_equals
from backend.sequences.scheduler.timing import roll_for
from tests.backend.conftest import Api, IssueToken, StartTexting, TextingBackend

STOP = "Reply STOP to opt out."
WELCOME = f"""
description: A welcome offer, two wordings against a holdout, and a reminder.
trigger: {{event: signed_up}}
exit_when:
  goal: [{{event: order_placed, where: {{source: text}}}}]
steps:
  - id: offer
    send:
      channel: sms
      holdout: 30%
      variants:
        - {{name: short, template: "10% off today. {STOP}"}}
        - {{name: long, template: "Welcome! Take 10% off your first order today. {STOP}"}}
  - id: pause
    wait: 1d
  - id: reminder
    send:
      channel: sms
      template: Your 10% off ends tonight. {STOP}
"""


# ------------------------------------------------------------------- lift, by itself


def test_newcombes_examples_give_his_intervals() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
    for counts, expected in [
        ((56, 70, 48, 80), (0.2, 0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.6, 0.1705, 0.8090)),
        ((0, 10, 0, 10), (0.0, -0.2775, 0.2775)),
        ((10, 10, 0, 10), (1.0, 0.6075, 1.0)),
    ]:
        lift = difference_interval(*counts)
        assert (lift.difference, lift.low, lift.high) == pytest.approx(expected, abs=5e-5)


def test_the_wilson_interval_stays_inside_zero_and_one() -> None:
    assert wilson_interval(0, 10).low == 0
    assert wilson_interval(10, 10).high == 1
    interval = wilson_interval(81, 263)  # Wilson's own textbook case: 0.2553 to 0.3662
    assert (interval.low, interval.high) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)


# -------------------------------------------------- goal filters, as the scheduler reads them


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Any]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def test_a_goals_where_filter_in_sql_matches_as_the_scheduler_does(database: Any) -> None:
    cases: list[tuple[dict[str, Any], str, Any]] = [
        ({"source": "text"}, "source", "text"),
        ({"source": "web"}, "source", "text"),
        ({}, "source", "text"),
        ({"source": None}, "source", "text"),
        ({"amount": 10}, "amount", 10),
        ({"amount": 10.0}, "amount", 10),
        ({"amount": "10"}, "amount", 10),
        ({"amount": 10}, "amount", "10"),
        ({"amount": 2.5}, "amount", "2.5"),
        ({"amount": 11}, "amount", 10),
        ({"amount": "inf"}, "amount", "inf"),
        ({"amount": 10}, "amount", "nan"),
        ({"first": True}, "first", True),
        ({"first": "True"}, "first", True),
        ({"first": True}, "first", "True"),
        ({"first": "true"}, "first", True),
        ({"first": False}, "first", True),
        ({"first": 1}, "first", True),
        ({"nested": {"a": 1}}, "nested", "x"),
        ({"list": [1]}, "list", 1),
    ]
    async with database.connect() as connection:
        for properties, key, wanted in cases:
            document = literal(properties, Document)
            found = await connection.scalar(select(property_equals(document, key, wanted)))
            assert bool(found) is matches({key: wanted}, properties), (properties, key, wanted)


# ------------------------------------------------------------------ a whole sequence


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    (folder / "sequences").mkdir(parents=True)
    for name in ("business.yml", "scoring.yml"):
        shutil.copy(PROJECT_ROOT / "data" / name, folder)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", folder / "segments")
    (folder / "sequences" / "welcome.yml").write_text(WELCOME)
    return folder


@dataclass
class Campaign:
    """The app with the welcome sequence; people signed up, by the arm of the offer they
    fell in."""

    backend: TextingBackend
    clock: FixedClock
    arms: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    @property
    def api(self) -> Api:
        return self.backend.api

    async def run_due(self) -> None:
        while await self.backend.app[WORKER].tick():
            pass

    async def later(self, by: timedelta) -> None:
        self.clock.advance(by)
        await self.run_due()

    async def sign_up(self, number: str) -> str:
        """A subscribed person (in Berlin: 10:30 there, outside quiet hours) signs up."""
        profile = await self.api.identify("sms", number, timezone="Europe/Berlin")
        await self.backend.subscribe(profile["id"])
        await self.event(profile["id"], "signed_up")
        welcome = next(s for s in self.backend.app[SEQUENCES] if s.name == "welcome")
        offer = welcome.steps[0]
        assert isinstance(offer, SendStep)
        variant = offer.send.variant_for(roll_for(uuid.UUID(profile["id"]), "welcome", "offer"))
        self.arms.setdefault(variant.name if variant else "holdout", []).append(
            (profile["id"], number)
        )
        return str(profile["id"])

    async def event(self, profile_id: str, type_: str, **properties: Any) -> None:
        await self.api.post(
            "/api/v1/events", {"type": type_, "profile_id": profile_id, "properties": properties}
        )

    async def stats(self, query: str = "", expect: int = 200) -> dict[str, Any]:
        return await self.api.get(f"/api/v1/sequences/welcome/stats{query}", expect=expect)


@pytest.fixture
async def campaign(start_texting: StartTexting, clock: FixedClock, data_dir: Path) -> Campaign:
    backend = await start_texting(data_dir=data_dir, scheduler_enabled=False)
    return Campaign(backend, clock)


def arm(step: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(a for a in step["arms"] if a["name"] == name)
    return found


async def test_a_marketer_reads_each_variants_results_and_its_lift_over_the_holdout(
    campaign: Campaign, issue_token: IssueToken
) -> None:
    # Enough people that each arm of the offer has the people the story needs.
    wanted = {"short": 3, "long": 3, "holdout": 2}
    for n in range(80):
        await campaign.sign_up(f"+1415555{n:04d}")
        if all(len(campaign.arms.get(a, [])) >= k for a, k in wanted.items()):
            break
    else:
        pytest.fail(
            f"the arms never filled: {Counter({a: len(p) for a, p in campaign.arms.items()})}"
        )
    short, long_, holdout = (campaign.arms[a] for a in ("short", "long", "holdout"))
    everyone = sum(len(people) for people in campaign.arms.values())
    campaign.backend.twilio.undeliverable.add(long_[2][1])  # a phone that is off for good

    await campaign.run_due()  # the offer (or nothing, for the holdout), then the pause
    await campaign.backend.settle()
    await campaign.later(timedelta(hours=1))

    await campaign.backend.texted(short[0][1], "Is this for real?")
    await campaign.event(short[1][0], "order_placed", source="text")
    await campaign.backend.texted(short[2][1], "STOP")
    await campaign.event(long_[0][0], "order_placed", source="text")
    await campaign.event(long_[1][0], "order_placed", source="web")  # not the goal
    await campaign.event(holdout[0][0], "order_placed", source="text")
    await campaign.backend.texted(holdout[1][1], "What offer?")  # after the step passed them

    await campaign.later(timedelta(days=2))  # the reminder, or the exit
    await campaign.backend.settle()

    stats = await campaign.stats()
    assert stats["sequence"] == "welcome"
    assert stats["goals"] == ["order_placed"]
    assert stats["confidence"] == 0.95
    assert stats["since"] is None
    assert stats["totals"] == {
        "enrolled": everyone,
        "active": 0,
        "completed": everyone - 6,
        "exited": 6,
        "exited_by_reason": {"goal_reached": 3, "opted_out": 1, "replied": 2},
        "sent": everyone - 2,  # the holdout who left before the reminder got nothing
        "delivered": everyone - 3,
        "replied": 2,
        "goal_reached": 3,
        "opted_out": 1,
        "goal_rate": pytest.approx(3 / everyone),
    }

    offer, reminder = stats["steps"]
    assert (offer["id"], offer["holdout"]) == ("offer", 0.3)
    assert [(a["name"], a["kind"], a["share"]) for a in offer["arms"]] == [
        ("short", "variant", pytest.approx(0.35)),
        ("long", "variant", pytest.approx(0.35)),
        ("holdout", "holdout", 0.3),
    ]
    figures = ("assigned", "sent", "delivered", "replied", "goal_reached", "opted_out")
    s, lg, h = len(short), len(long_), len(holdout)
    assert {k: arm(offer, "short")[k] for k in figures} == dict(
        zip(figures, (s, s, s, 1, 1, 1), strict=True)
    )
    assert {k: arm(offer, "long")[k] for k in figures} == dict(
        zip(figures, (lg, lg, lg - 1, 0, 1, 0), strict=True)
    )
    assert {k: arm(offer, "holdout")[k] for k in figures} == dict(
        zip(figures, (h, 0, 0, 1, 1, 0), strict=True)
    )
    assert {k: offer[k] for k in figures} == dict(
        zip(figures, (everyone, s + lg, s + lg - 1, 2, 3, 1), strict=True)
    )

    # Lift: goal rates of each variant minus the holdout's, with Newcombe's interval.
    assert arm(offer, "holdout")["goal_rate"] == pytest.approx(1 / h)
    assert arm(offer, "holdout")["lift"] is None
    for name, people in (("short", s), ("long", lg)):
        read = arm(offer, name)
        assert read["goal_rate"] == pytest.approx(1 / people)
        expected = difference_interval(1, people, 1, h)
        assert read["lift"] == {
            "difference": pytest.approx(1 / people - 1 / h),
            "low": pytest.approx(expected.low),
            "high": pytest.approx(expected.high),
        }
        assert read["lift"]["low"] < read["lift"]["difference"] < read["lift"]["high"]

    # The reminder went to everyone still in the sequence: one text, no holdout, no lift.
    assert (reminder["id"], reminder["holdout"]) == ("reminder", 0)
    [default] = reminder["arms"]
    stayed = everyone - 6
    assert {k: default[k] for k in figures} == dict(
        zip(figures, (stayed, stayed, stayed - 1, 0, 0, 0), strict=True)
    )
    assert (default["name"], default["share"], default["lift"]) == ("default", 1.0, None)

    # Marketers read results too; `since` counts only people enrolled from then on.
    marketer = Api(campaign.backend.client, await issue_token(Role.MARKETER))
    assert (await marketer.get("/api/v1/sequences/welcome/stats"))["totals"] == stats["totals"]
    later = await campaign.stats("?since=" + quote(campaign.clock.now().isoformat()))
    assert later["totals"]["enrolled"] == 0
    assert later["since"] is not None
    assert [(a["assigned"], a["goal_rate"], a["lift"]) for a in later["steps"][0]["arms"]] == [
        (0, None, None)
    ] * 3


async def test_a_sequence_nobody_entered_reads_as_zeros(campaign: Campaign) -> None:
    stats = await campaign.stats()
    assert stats["totals"]["enrolled"] == 0
    assert stats["totals"]["exited_by_reason"] == {}
    assert stats["totals"]["goal_rate"] is None
    assert [step["assigned"] for step in stats["steps"]] == [0, 0]


async def test_bad_questions_get_problems(campaign: Campaign) -> None:
    missing = await campaign.api.get("/api/v1/sequences/no-such/stats", expect=404)
    assert missing["type"] == "urn:parley:problem:sequence-not-found"
    for since in ("yesterday", "2026-03-01T00:00:00", "0001-01-01T00:00:00+05:00"):
        bad = await campaign.stats(f"?since={quote(since)}", expect=400)
        assert bad["type"] == "urn:parley:problem:invalid-query"
    assert (await campaign.stats("?since=2026-03-01T00:00:00Z"))["since"] == (
        datetime.fromisoformat("2026-03-01T00:00:00+00:00").isoformat().replace("+00:00", "Z")
    )
