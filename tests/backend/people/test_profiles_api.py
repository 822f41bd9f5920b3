"""Identifying people by channel identity and reading their profiles, over HTTP."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

IDENTIFY = "/api/v1/identify"


async def test_identify_creates_a_profile_once_and_finds_it_again(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    body = {"channel": "web", "address": "session-1", "attributes": {"first_name": "Ada"}}
    first = await client.post(IDENTIFY, json=body, headers=service_headers)
    assert first.status == 201
    created = await first.json()
    assert created["created"] is True
    assert created["profile"]["first_name"] == "Ada"
    assert created["profile"]["identities"] == [
        {"kind": "web", "address": "session-1", "created_at": "2026-03-02T09:30:00Z"}
    ]

    again = await client.post(
        IDENTIFY, json={"channel": "web", "address": "session-1"}, headers=service_headers
    )
    assert again.status == 200
    found = await again.json()
    assert found["created"] is False
    assert found["profile"]["id"] == created["profile"]["id"]
    assert found["profile"]["first_name"] == "Ada"


async def test_core_fields_update_the_profile_and_other_keys_become_attributes(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    body = {
        "channel": "web",
        "address": "session-2",
        "attributes": {
            "first_name": "  Grace ",
            "email": "Grace@Example.COM",
            "timezone": "America/New_York",
            "plan_interest": "pro",
            "seats": 12,
        },
    }
    response = await client.post(IDENTIFY, json=body, headers=service_headers)
    profile = (await response.json())["profile"]
    assert profile["first_name"] == "Grace"
    assert profile["email"] == "grace@example.com"
    assert profile["timezone"] == "America/New_York"
    assert profile["attributes"] == {"plan_interest": "pro", "seats": 12}

    cleared = await client.post(
        IDENTIFY,
        json={"channel": "web", "address": "session-2", "attributes": {"seats": None}},
        headers=service_headers,
    )
    assert (await cleared.json())["profile"]["attributes"] == {"plan_interest": "pro"}


async def test_phone_identities_are_stored_in_e164_so_any_spelling_finds_the_person(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    first = await client.post(
        IDENTIFY, json={"channel": "sms", "address": "(415) 555-2671"}, headers=service_headers
    )
    profile = (await first.json())["profile"]
    assert profile["identities"][0]["address"] == "+14155552671"

    second = await client.post(
        IDENTIFY, json={"channel": "sms", "address": "+1 415-555-2671"}, headers=service_headers
    )
    assert (await second.json())["profile"]["id"] == profile["id"]


async def test_the_same_new_identity_identified_concurrently_makes_one_profile(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    body = {"channel": "web", "address": "racing-session"}
    responses = await asyncio.gather(
        *(client.post(IDENTIFY, json=body, headers=service_headers) for _ in range(8))
    )
    bodies = [await r.json() for r in responses]
    assert {r.status for r in responses} <= {200, 201}
    assert len({b["profile"]["id"] for b in bodies}) == 1
    assert sum(b["created"] for b in bodies) == 1


async def test_get_profile_returns_what_identify_stored(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    created = await client.post(
        IDENTIFY,
        json={"channel": "web", "address": "s-3", "attributes": {"first_name": "Linus"}},
        headers=service_headers,
    )
    profile_id = (await created.json())["profile"]["id"]
    response = await client.get(f"/api/v1/profiles/{profile_id}", headers=service_headers)
    assert response.status == 200
    profile = await response.json()
    assert profile["id"] == profile_id
    assert profile["first_name"] == "Linus"


async def test_unknown_and_malformed_profile_ids_are_404_problems(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    for profile_id in ("9b2e8a7e-55a5-4a55-9f43-0c4d0c7c2f11", "not-a-uuid"):
        response = await client.get(f"/api/v1/profiles/{profile_id}", headers=service_headers)
        assert response.status == 404
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["type"] == "urn:parley:problem:profile-not-found"
        assert profile_id in problem["detail"]
