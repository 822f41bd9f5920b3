"""One person, two profiles: merging. And the person's rights: export and erasure."""

from __future__ import annotations

from datetime import timedelta

from backend.core.clock import FixedClock
from tests.backend.conftest import Api


async def test_a_web_visitor_giving_a_known_phone_number_merges_into_the_sms_profile(
    service: Api, admin: Api, clock: FixedClock
) -> None:
    texter = await service.identify("sms", "+14155550301", first_name="Ada", plan="pro")
    await service.post("/api/v1/events", {"type": "trial_started", "profile_id": texter["id"]})
    await service.post(
        f"/api/v1/profiles/{texter['id']}/consent",
        {
            "channel": "sms",
            "purpose": "marketing",
            "action": "withdraw",
            "source": "sms_keyword",
            "reply": "STOP",
        },
        expect=201,
    )
    clock.advance(timedelta(hours=1))
    visitor = await service.identify(
        "web", "web-visitor-1", first_name="Ada L.", company="Analytical Engines"
    )
    await service.post("/api/v1/events", {"type": "page_viewed", "profile_id": visitor["id"]})

    added = await service.post(
        f"/api/v1/profiles/{visitor['id']}/identities", {"kind": "sms", "address": "(415) 555-0301"}
    )
    survivor = added["profile"]
    # The older profile survives; the newer one's values win where both have one.
    assert survivor["id"] == texter["id"]
    assert added["merged_away"] == visitor["id"]
    assert survivor["first_name"] == "Ada L."
    assert survivor["company"] == "Analytical Engines"
    assert survivor["attributes"] == {"plan": "pro"}
    assert sorted((i["kind"], i["address"]) for i in survivor["identities"]) == [
        ("sms", "+14155550301"), ("web", "web-visitor-1"),
    ]  # fmt: skip
    events = await service.get(f"/api/v1/profiles/{survivor['id']}/events")
    assert sorted(e["type"] for e in events["items"]) == ["page_viewed", "trial_started"]
    consent = await service.get(f"/api/v1/profiles/{survivor['id']}/consent/sms/marketing")
    assert consent["state"] == "withdrawn"
    score = await service.get(f"/api/v1/profiles/{survivor['id']}/score")
    assert {r["rule"] for r in score["reasons"]} >= {"trial-started", "named-company"}

    # The old id points at the survivor, and writes through it land there.
    pointer = await service.get(f"/api/v1/profiles/{visitor['id']}", expect=308)
    assert pointer["merged_into"] == texter["id"]
    await service.post("/api/v1/events", {"type": "demo_booked", "profile_id": visitor["id"]})
    events = await service.get(f"/api/v1/profiles/{texter['id']}/events")
    assert events["items"][0]["type"] == "demo_booked"

    merges = await admin.get(f"/api/v1/audit?target={texter['id']}")
    assert "add_identity" in [entry["action"] for entry in merges["items"]]


async def test_profiles_can_be_merged_on_request(service: Api, clock: FixedClock) -> None:
    one = await service.identify("web", "merge-a")
    clock.advance(timedelta(minutes=1))
    two = await service.identify("email", "merge-b@example.com")
    merged = await service.post(f"/api/v1/profiles/{two['id']}/merge", {"other": one["id"]})
    assert merged["profile"]["id"] == one["id"]
    again = await service.post(
        f"/api/v1/profiles/{one['id']}/merge", {"other": two["id"]}, expect=409
    )
    assert again["type"] == "urn:parley:problem:already-merged"


async def test_export_holds_everything_about_the_person(service: Api, admin: Api) -> None:
    person = await service.identify("sms", "+14155550302", first_name="Grace")
    await service.post("/api/v1/events", {"type": "trial_started", "profile_id": person["id"]})
    await service.post(
        f"/api/v1/profiles/{person['id']}/consent",
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )
    export = await admin.get(f"/api/v1/profiles/{person['id']}/export")
    assert export["profile"]["first_name"] == "Grace"
    assert export["identities"][0]["address"] == "+14155550302"
    assert [e["type"] for e in export["events"]] == ["trial_started"]
    assert export["consent"]["ledger"][0]["action"] == "grant"
    assert export["score_contributions"][0]["rule"] == "trial-started"
    assert {c["action"] for c in export["changes"]} >= {"identify", "record_consent"}
    await service.get(f"/api/v1/profiles/{person['id']}/export", expect=403)


async def test_an_erased_person_is_gone_and_does_not_come_back_subscribed(
    service: Api, admin: Api
) -> None:
    person = await service.identify("sms", "+14155550303", first_name="Hedy")
    await service.post("/api/v1/events", {"type": "trial_started", "profile_id": person["id"]})
    await admin.call("DELETE", f"/api/v1/profiles/{person['id']}", expect=204)
    await admin.get(f"/api/v1/profiles/{person['id']}", expect=404)
    await admin.get(f"/api/v1/profiles/{person['id']}/events", expect=404)

    # The same number turns up again, say in an import: a new, empty profile whose
    # marketing is withdrawn, and an import cannot grant it back.
    again = await service.identify("sms", "+14155550303")
    assert again["id"] != person["id"]
    assert again["first_name"] is None
    consent = await service.get(f"/api/v1/profiles/{again['id']}/consent")
    assert {s["state"] for s in consent["states"] if s["purpose"] == "marketing"} == {"withdrawn"}
    assert consent["ledger"][0]["source"] == "erasure"
    refused = await service.post(
        f"/api/v1/profiles/{again['id']}/consent",
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "import"},
        expect=409,
    )
    assert refused["type"] == "urn:parley:problem:erased-person"
    # Their own new words still count.
    own = await service.post(
        f"/api/v1/profiles/{again['id']}/consent",
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": "May we email you?", "reply": "yes"},
        expect=201,
    )  # fmt: skip
    assert own["state"] == "pending"  # until they follow the confirmation e-mail's link


async def test_every_write_is_in_the_audit_log_with_who_made_it(service: Api, admin: Api) -> None:
    person = await service.identify("web", "audited", first_name="Ida")
    await service.call("PATCH", f"/api/v1/profiles/{person['id']}", {"attributes": {"plan": "pro"}})
    await service.post(
        f"/api/v1/profiles/{person['id']}/consent",
        {"channel": "web", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )
    await service.post("/api/v1/events", {"type": "x", "profile_id": person["id"]})
    await admin.post(
        "/api/v1/segments", {"name": "audited", "rule": {"identity": "web"}}, expect=201
    )
    log = (await admin.get("/api/v1/audit?limit=10"))["items"]
    # Parley's own entries (the scheduler's daily retention run) may come in between.
    actions = [(e["action"], e["role"]) for e in reversed(log) if e["role"] != "system"]
    assert actions[-5:] == [
        ("identify", "service"), ("update_profile", "service"), ("record_consent", "service"),
        ("record_events", "service"), ("create_segment", "admin"),
    ]  # fmt: skip
    # Details name what changed, not the personal data itself.
    assert "Ida" not in str(log)
