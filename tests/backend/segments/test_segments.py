"""Segments: each kind of condition, counted, paged and tested in SQL; definitions from
files and from the API; mistakes reported where they are."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.core.clock import FixedClock
from backend.data_files import validate
from tests.backend.conftest import Api


@pytest.fixture
async def people(admin: Api, clock: FixedClock) -> dict[str, str]:
    """Five people with known fields, identities, consent and events."""
    ada = await admin.identify("sms", "+14155550201", first_name="Ada", plan="pro", team_size=80)
    bob = await admin.identify("web", "bob-session", first_name="Bob", plan="free", team_size=3)
    cy = await admin.identify("email", "cy@example.com", first_name="Cy", company="Initech")
    clock.advance(timedelta(days=40))
    dee = await admin.identify("sms", "+14155550202", first_name="Dee", plan="team")
    eve = await admin.identify("web", "eve-session")
    for action in ("grant", "confirm"):  # e-mail marketing is double opt-in
        await admin.post(
            f"/api/v1/profiles/{cy['id']}/consent",
            {"channel": "email", "purpose": "marketing", "action": action, "source": "api"},
            expect=201,
        )
    await admin.post(
        "/api/v1/events",
        {"events": [
            {"type": "trial_started", "profile_id": ada["id"]},
            {"type": "trial_started", "profile_id": bob["id"], "occurred_at": "2026-03-05T00:00:00Z"},
            {"type": "page_viewed", "profile_id": ada["id"], "properties": {"path": "/pricing"}},
            {"type": "page_viewed", "profile_id": ada["id"], "properties": {"path": "/pricing"}},
            {"type": "page_viewed", "profile_id": dee["id"], "properties": {"path": "/blog"}},
        ]},
    )  # fmt: skip
    return {p["first_name"] or "Eve": p["id"] for p in (ada, bob, cy, dee, eve)}


async def count(api: Api, rule: dict[str, Any]) -> int:
    result = await api.post("/api/v1/segment-previews", {"rule": rule})
    return int(result["count"])


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"field": "first_name", "op": "eq", "value": "Ada"}, 1),
        ({"field": "first_name", "op": "starts_with", "value": "D"}, 1),
        ({"field": "attributes.team_size", "op": "gte", "value": 50}, 1),
        ({"field": "attributes.plan", "op": "in", "value": ["pro", "team"]}, 2),
        # "not equal" counts those who have no plan at all, too.
        ({"field": "attributes.plan", "op": "ne", "value": "free"}, 4),
        ({"field": "company", "op": "exists"}, 1),
        ({"field": "company", "op": "exists", "value": False}, 4),
        ({"field": "created_at", "op": "within_days", "value": 7}, 2),
        ({"field": "created_at", "op": "older_than_days", "value": 30}, 3),
        ({"identity": "sms"}, 2),
        ({"consent": "email", "purpose": "marketing"}, 1),
        ({"consent": "email", "purpose": "marketing", "state": "none"}, 4),
        ({"event": "trial_started"}, 2),
        # Bob's trial began 37 days ago; Ada's today.
        ({"event": "trial_started", "within_days": 30}, 1),
        ({"event": "page_viewed", "at_least": 2, "where": {"path": "/pricing"}}, 1),
        ({"event": "page_viewed", "where": {"path": "/pricing"}}, 1),
        # The shipped scoring rules: Ada (trial, pricing x2, big team), Bob (trial), Cy (company).
        ({"field": "score", "op": "gt", "value": 0}, 3),
        ({"any": [{"identity": "email"}, {"field": "first_name", "op": "eq", "value": "Bob"}]}, 2),
        ({"all": [{"identity": "sms"}, {"not": {"event": "trial_started"}}]}, 1),
        # `any` over conditions on one table is compiled as one subquery: same answers.
        ({"any": [{"consent": "email"}, {"consent": "sms"}]}, 1),
        ({"any": [{"identity": "sms"}, {"identity": "email"}]}, 3),
        (
            {
                "any": [
                    {"event": "trial_started", "within_days": 30},
                    {"event": "page_viewed", "where": {"path": "/blog"}},
                ]
            },
            2,
        ),
        ({"any": [{"consent": "email", "state": "none"}, {"identity": "web"}]}, 4),
        (
            {
                "any": [
                    {"identity": "email"},
                    {"event": "trial_started"},
                    {"field": "first_name", "op": "eq", "value": "Dee"},
                ]
            },
            4,
        ),
    ],
)
async def test_each_condition_selects_the_right_people(
    admin: Api, people: dict[str, str], rule: dict[str, Any], expected: int
) -> None:
    assert await count(admin, rule) == expected


async def test_members_come_a_page_at_a_time_and_membership_is_answered(
    admin: Api, people: dict[str, str]
) -> None:
    await admin.post(
        "/api/v1/segments",
        {"name": "named", "rule": {"field": "first_name", "op": "exists"}},
        expect=201,
    )
    assert (await admin.get("/api/v1/segments/named/count"))["count"] == 4
    first = await admin.get("/api/v1/segments/named/members?limit=3")
    second = await admin.get(f"/api/v1/segments/named/members?limit=3&after={first['next']}")
    names = [p["first_name"] for p in first["items"] + second["items"]]
    assert sorted(names) == ["Ada", "Bob", "Cy", "Dee"]
    assert second["next"] is None
    inside = await admin.get(f"/api/v1/segments/named/members/{people['Ada']}")
    outside = await admin.get(f"/api/v1/segments/named/members/{people['Eve']}")
    assert (inside["member"], outside["member"]) == (True, False)


async def test_segments_from_files_are_listed_and_cannot_be_changed_through_the_api(
    admin: Api,
) -> None:
    listed = {s["name"]: s["source"] for s in (await admin.get("/api/v1/segments"))["items"]}
    assert listed["sms-subscribers"] == "file"
    problem = await admin.call(
        "PUT", "/api/v1/segments/sms-subscribers", {"rule": {"identity": "sms"}}, expect=409
    )
    assert "data/segments/sms-subscribers.yml" in problem["detail"]


async def test_api_segments_can_be_created_changed_and_deleted(marketer: Api) -> None:
    rule = {"identity": "web"}
    await marketer.post("/api/v1/segments", {"name": "webbies", "rule": rule}, expect=201)
    duplicate = await marketer.post(
        "/api/v1/segments", {"name": "webbies", "rule": rule}, expect=409
    )
    assert duplicate["type"] == "urn:parley:problem:segment-exists"
    changed = await marketer.call(
        "PUT", "/api/v1/segments/webbies", {"description": "SMS now", "rule": {"identity": "sms"}}
    )
    assert changed["rule"] == {"identity": "sms"}
    await marketer.call("DELETE", "/api/v1/segments/webbies", expect=204)
    await marketer.get("/api/v1/segments/webbies", expect=404)


@pytest.mark.parametrize(
    ("rule", "pointer", "words"),
    [
        ({"field": "colour", "op": "eq", "value": "red"}, "/rule", "unknown field 'colour'"),
        (
            {"all": [{"identity": "sms"}, {"field": "email", "op": "gt", "value": "a"}]},
            "/rule/all/1",
            "'gt' does not apply",
        ),
        ({"all": [{"bogus": 1}]}, "/rule/all/0", "one of the keys"),
        ({"field": "score", "op": "gte", "value": "high"}, "/rule", "score is a number"),
        ({"event": "x", "at_least": 0}, "/rule/at_least", "greater than or equal to 1"),
        ({"consent": "all"}, "/rule", "one channel"),
        (
            {"field": "created_at", "op": "eq", "value": 3},
            "/rule",
            "within_days or older_than_days",
        ),
    ],
)
async def test_a_bad_rule_is_a_422_that_says_where(
    admin: Api, rule: dict[str, Any], pointer: str, words: str
) -> None:
    problem = await admin.post("/api/v1/segment-previews", {"rule": rule}, expect=422)
    assert any(e["pointer"] == pointer and words in e["detail"] for e in problem["errors"]), problem


def test_mistakes_in_data_files_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "vip.yml").write_text(
        "description: VIPs\nrule:\n  all:\n    - {identity: sms}\n    - {field: colour, op: eq, value: red}\n"
    )
    (tmp_path / "segments" / "broken.yml").write_text("rule: [unclosed\n")
    (tmp_path / "scoring.yml").write_text(
        "half_life_days: 30\nevents:\n  - name: a\n    event: x\n    points: lots\n"
    )
    mistakes = {(m.file.name, m.line): m.message for m in validate(tmp_path)}
    assert "unknown field 'colour'" in mistakes[("vip.yml", 5)]
    assert mistakes[("broken.yml", 2)].startswith("not valid YAML")
    assert "events.0.points" in mistakes[("scoring.yml", 5)]


def test_the_shipped_data_files_are_valid() -> None:
    from backend.core.settings import PROJECT_ROOT

    assert validate(PROJECT_ROOT / "data") == []


async def test_a_value_of_another_type_is_skipped_not_an_error(admin: Api) -> None:
    await admin.identify("web", "typed-1", team_size="fifty", trial=True, plan=7)
    await admin.identify("web", "typed-2", team_size=60, trial="yes", plan="pro")
    await admin.identify("web", "typed-3", team_size=None)
    assert await count(admin, {"field": "attributes.team_size", "op": "gte", "value": 50}) == 1
    assert await count(admin, {"field": "attributes.trial", "op": "eq", "value": True}) == 1
    assert await count(admin, {"field": "attributes.plan", "op": "eq", "value": "pro"}) == 1
    assert await count(admin, {"field": "attributes.team_size", "op": "exists"}) == 2


async def test_membership_agrees_with_counting_for_every_kind_of_event_rule(
    admin: Api, people: dict[str, str]
) -> None:
    rules = {
        "twice-on-pricing": {"event": "page_viewed", "at_least": 2, "where": {"path": "/pricing"}},
        "never-trialled": {"not": {"event": "trial_started"}},
        "trialled-lately": {"event": "trial_started", "within_days": 30},
    }
    for name, rule in rules.items():
        await admin.post("/api/v1/segments", {"name": name, "rule": rule}, expect=201)
        members = {p["id"] for p in (await admin.get(f"/api/v1/segments/{name}/members"))["items"]}
        for person, profile_id in people.items():
            answer = await admin.get(f"/api/v1/segments/{name}/members/{profile_id}")
            assert answer["member"] == (profile_id in members), (name, person)


def test_an_sms_help_text_that_does_not_say_how_to_stop_is_a_mistake(tmp_path: Path) -> None:
    (tmp_path / "business.yml").write_text(
        "name: Brightdesk\ntimezone: UTC\nsms_help: >-\n  Brightdesk: call us any time.\n"
    )
    [mistake] = validate(tmp_path)
    assert (mistake.file.name, mistake.line) == ("business.yml", 3)
    assert "STOP" in mistake.message and "rates may apply" in mistake.message
