"""Demo bookings (one per slot, each change an event) and hand-offs to a person."""

from __future__ import annotations

from tests.backend.conftest import Api

SLOT = "2026-03-03T17:00:00Z"
OTHER_SLOT = "2026-03-03T18:00:00Z"


async def test_a_slot_is_booked_once_and_each_change_is_an_event(service: Api) -> None:
    ada = await service.identify("web", "demo-ada")
    bob = await service.identify("web", "demo-bob")
    booked = await service.post(
        "/api/v1/demos", {"profile_id": ada["id"], "starts_at": SLOT, "conversation_id": "demo-ada"},
        expect=201,
    )  # fmt: skip
    assert (booked["starts_at"], booked["minutes"], booked["status"]) == (
        "2026-03-03T17:00:00Z",
        30,
        "booked",
    )
    taken = await service.post(
        "/api/v1/demos", {"profile_id": bob["id"], "starts_at": SLOT}, expect=409
    )
    assert taken["type"] == "urn:parley:problem:slot-taken"

    week = await service.get("/api/v1/demos?from=2026-03-02T00:00:00Z&to=2026-03-09T00:00:00Z")
    assert [d["starts_at"] for d in week["items"]] == [SLOT]

    moved = await service.call("PATCH", f"/api/v1/demos/{booked['id']}", {"starts_at": OTHER_SLOT})
    assert moved["starts_at"] == OTHER_SLOT
    # The first slot is free again.
    await service.post("/api/v1/demos", {"profile_id": bob["id"], "starts_at": SLOT}, expect=201)
    cancelled = await service.call("DELETE", f"/api/v1/demos/{booked['id']}")
    assert cancelled["status"] == "cancelled"
    assert (await service.get(f"/api/v1/profiles/{ada['id']}/demos"))["items"] == []

    events = await service.get(f"/api/v1/profiles/{ada['id']}/events")
    assert [e["type"] for e in events["items"]] == [
        "demo_cancelled",
        "demo_rescheduled",
        "demo_booked",
    ]
    score = await service.get(f"/api/v1/profiles/{ada['id']}/score")
    assert "demo-booked" in [r["rule"] for r in score["reasons"]]


async def test_a_demo_in_the_past_or_for_nobody_is_refused(service: Api) -> None:
    ada = await service.identify("web", "demo-past")
    past = await service.post(
        "/api/v1/demos", {"profile_id": ada["id"], "starts_at": "2020-01-01T10:00:00Z"}, expect=422
    )
    assert past["errors"][0]["pointer"] == "/starts_at"
    await service.post(
        "/api/v1/demos",
        {"profile_id": "00000000-0000-0000-0000-000000000000", "starts_at": SLOT},
        expect=404,
    )


async def test_a_conversation_is_handed_off_once_and_stays_open_if_the_bot_cannot_resume(
    service: Api, marketer: Api
) -> None:
    person = await service.identify("web", "handoff-1")
    body = {
        "conversation_id": "handoff-1",
        "channel": "rest",
        "reason": "requested",
        "profile_id": person["id"],
    }
    opened = await service.post("/api/v1/handoffs", body, expect=201)
    again = await service.post("/api/v1/handoffs", body, expect=200)
    assert again["id"] == opened["id"]
    waiting = await marketer.get("/api/v1/handoffs?status=open")
    assert [h["conversation_id"] for h in waiting["items"]] == ["handoff-1"]

    # No Rasa runs in this test: the hand-back says so and changes nothing.
    refused = await marketer.post(f"/api/v1/handoffs/{opened['id']}/close", {}, expect=503)
    assert refused["type"] == "urn:parley:problem:rasa-unavailable"
    assert (await marketer.get("/api/v1/handoffs?status=open"))["items"][0]["status"] == "open"
