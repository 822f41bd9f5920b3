"""Reporting events (once per idempotency key) and the lead score they build, explained."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from backend.api.app import create_app
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.settings import PROJECT_ROOT, Settings
from tests.backend.conftest import Api, IssueToken

SCORING = """
half_life_days: 10
events:
  - {name: trial, event: trial_started, points: 30}
  - {name: pricing, event: page_viewed, where: {path: /pricing}, points: 5}
attributes:
  - {name: big-team, when: {field: attributes.team_size, op: gte, value: 50}, points: 20}
"""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "scoring.yml").write_text(SCORING)
    shutil.copy(PROJECT_ROOT / "data" / "business.yml", folder)
    return folder


@pytest.fixture
async def api(
    settings: Settings, aiohttp_client, clock: FixedClock, data_dir: Path, issue_token: IssueToken
) -> Api:
    # `settings` (the database) first: the app stops before its database is dropped,
    # or its scheduler waits out its ten seconds against a database that is gone.
    app = create_app(settings.model_copy(update={"data_dir": data_dir}), clock)
    client: TestClient = await aiohttp_client(app)
    return Api(client, await issue_token(Role.ADMIN))


def event(type_: str, address: str = "+14155550123", **extra: object) -> dict[str, object]:
    return {"type": type_, "identity": {"kind": "sms", "address": address}, **extra}


async def test_an_event_for_a_new_identity_creates_the_profile_and_scores_it(api: Api) -> None:
    result = await api.post("/api/v1/events", event("trial_started"))
    assert (result["stored"], result["duplicates"]) == (1, 0)
    profile_id = result["results"][0]["profile_id"]
    profile = await api.get(f"/api/v1/profiles/{profile_id}")
    assert profile["identities"][0]["address"] == "+14155550123"
    assert profile["score"] == 30


async def test_a_repeated_idempotency_key_is_stored_once(api: Api) -> None:
    body = event("trial_started", idempotency_key="shop-order-1")
    first = await api.post("/api/v1/events", body)
    again = await api.post("/api/v1/events", {"events": [body, body]})
    assert first["results"][0]["status"] == "stored"
    assert [r["status"] for r in again["results"]] == ["duplicate", "duplicate"]
    assert again["results"][0]["id"] == first["results"][0]["id"]
    profile_id = first["results"][0]["profile_id"]
    events = await api.get(f"/api/v1/profiles/{profile_id}/events")
    assert len(events["items"]) == 1
    assert (await api.get(f"/api/v1/profiles/{profile_id}"))["score"] == 30


async def test_a_batch_with_one_bad_event_stores_nothing(api: Api) -> None:
    batch = {
        "events": [
            event("trial_started", "+14155550124"),
            {"type": "page_viewed", "profile_id": "00000000-0000-0000-0000-000000000000"},
        ]
    }
    problem = await api.post("/api/v1/events", batch, expect=422)
    assert problem["errors"] == [
        {"pointer": "/events/1/profile_id", "detail": "there is no such profile"}
    ]
    lookup = await api.post("/api/v1/events", event("page_viewed", "+14155550124"))
    profile = await api.get(f"/api/v1/profiles/{lookup['results'][0]['profile_id']}/events")
    assert [e["type"] for e in profile["items"]] == ["page_viewed"]


async def test_invalid_events_name_the_field(api: Api) -> None:
    cases = [
        ({"type": "Trial Started", "identity": {"kind": "web", "address": "x"}}, "/type"),
        ({"type": "x"}, ""),
        ({"events": []}, "/events"),
        ({"events": [event("x", occurred_at="2026-03-02T10:00:00")]}, "/events/0/occurred_at"),
        ({"events": [event("x", occurred_at="2099-01-01T00:00:00Z")]}, "/events/0/occurred_at"),
        (event("x", address="12"), "/identity/address"),
    ]
    for body, pointer in cases:
        problem = await api.post("/api/v1/events", body, expect=422)
        assert pointer in [e["pointer"].rstrip("/") for e in problem["errors"]] or (
            pointer == "" and problem["errors"][0]["pointer"] == "/"
        ), (body, problem)


async def test_property_filters_decide_which_events_score(api: Api) -> None:
    result = await api.post(
        "/api/v1/events",
        {"events": [
            event("page_viewed", "+14155550125", properties={"path": "/pricing"}),
            event("page_viewed", "+14155550125", properties={"path": "/blog"}),
            event("page_viewed", "+14155550125", properties={"path": "/pricing"}),
        ]},
    )  # fmt: skip
    profile_id = result["results"][0]["profile_id"]
    score = await api.get(f"/api/v1/profiles/{profile_id}/score")
    assert score["score"] == 10
    assert score["reasons"] == [
        {"rule": "pricing", "kind": "event", "points": 10.0, "count": 2,
         "last_at": "2026-03-02T09:30:00Z"},
    ]  # fmt: skip


async def test_event_points_halve_every_half_life(api: Api, clock: FixedClock) -> None:
    result = await api.post("/api/v1/events", event("trial_started", "+14155550126"))
    profile_id = result["results"][0]["profile_id"]
    clock.advance(timedelta(days=10))
    assert (await api.get(f"/api/v1/profiles/{profile_id}"))["score"] == 15
    clock.advance(timedelta(days=10))
    assert (await api.get(f"/api/v1/profiles/{profile_id}/score"))["reasons"][0]["points"] == 7.5


async def test_an_old_event_scores_what_is_left_of_it(api: Api, clock: FixedClock) -> None:
    ten_days_ago = (clock.now() - timedelta(days=10)).isoformat()
    result = await api.post(
        "/api/v1/events", event("trial_started", "+14155550127", occurred_at=ten_days_ago)
    )
    assert (await api.get(f"/api/v1/profiles/{result['results'][0]['profile_id']}"))["score"] == 15


async def test_attribute_rules_follow_the_profile(api: Api) -> None:
    profile = await api.identify("web", "scoring-attrs", team_size=80)
    assert profile["score"] == 20
    changed = await api.call(
        "PATCH", f"/api/v1/profiles/{profile['id']}", {"attributes": {"team_size": 12}}
    )
    assert changed["score"] == 0
    reasons = await api.get(f"/api/v1/profiles/{profile['id']}/score")
    assert reasons["reasons"] == []


async def test_changed_rules_rescore_everyone_at_start(
    settings: Settings,
    aiohttp_client,
    clock: FixedClock,
    data_dir: Path,
    api: Api,
    issue_token: IssueToken,
) -> None:
    result = await api.post("/api/v1/events", event("trial_started", "+14155550128"))
    profile_id = result["results"][0]["profile_id"]
    (data_dir / "scoring.yml").write_text(SCORING.replace("points: 30", "points: 50"))
    app = create_app(settings.model_copy(update={"data_dir": data_dir}), clock)
    fresh = Api(await aiohttp_client(app), await issue_token(Role.ANALYST))
    assert (await fresh.get(f"/api/v1/profiles/{profile_id}"))["score"] == 50


async def test_each_result_names_the_event_stored_for_it(api: Api) -> None:
    # A batch's events go in as one statement: every result must still be its own event.
    people = [f"+1415555{n:04d}" for n in range(200, 212)]
    batch = [
        event(
            "page_viewed", people[n % len(people)],
            properties={"path": f"/page/{n}"}, idempotency_key=f"order-{n % 40}",
        )
        for n in range(60)
    ]  # fmt: skip
    result = await api.post("/api/v1/events", {"events": batch})
    assert (result["stored"], result["duplicates"]) == (40, 20)
    stored: dict[int, str] = {}
    for profile_id in {r["profile_id"] for r in result["results"]}:
        page = await api.get(f"/api/v1/profiles/{profile_id}/events?limit=500")
        stored |= {e["id"]: e["properties"]["path"] for e in page["items"]}
    for n, outcome in enumerate(result["results"]):
        if outcome["status"] == "stored":
            assert stored[outcome["id"]] == f"/page/{n}"
        else:
            assert n >= 40


async def test_batches_sharing_people_at_once_all_score(api: Api) -> None:
    # Each batch names the same people in its own order; their scores are written in one
    # statement per batch, so this is where two batches could lock each other out.
    people = [f"+1415555{n:04d}" for n in range(300, 330)]
    orders = [people, people[::-1], people[15:] + people[:15], people[::2] + people[1::2]]
    bodies = [
        {"events": [event("trial_started", p) for p in order for _ in range(3)]} for order in orders
    ]
    results = await asyncio.gather(*(api.post("/api/v1/events", b) for b in bodies))
    assert [r["stored"] for r in results] == [90, 90, 90, 90]
    scores = {
        (await api.get(f"/api/v1/profiles/{r['profile_id']}"))["score"]
        for r in results[0]["results"]
    }
    assert scores == {12 * 30}
