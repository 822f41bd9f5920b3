"""The consent ledger over the API: double opt-in, withdrawals, evidence, append-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backend.consent.ledger import Channel, Purpose, State, fold
from backend.core.clock import FixedClock
from backend.core.models import ConsentEvent
from tests.backend.conftest import Api

ASKED = "Can we text you product news? Msg & data rates may apply. Reply YES to confirm."


def consent_path(profile: dict) -> str:
    return f"/api/v1/profiles/{profile['id']}/consent"


async def test_sms_marketing_needs_a_confirmation_before_it_is_allowed(service: Api) -> None:
    person = await service.identify("sms", "+14155550101")
    asked = await service.post(
        consent_path(person),
        {"channel": "sms", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": ASKED, "reply": "sure, text me"},
        expect=201,
    )  # fmt: skip
    assert asked["line"]["pending"] is True
    assert (asked["state"], asked["allowed"]) == ("pending", False)
    check = await service.get(f"{consent_path(person)}/sms/marketing")
    assert (check["state"], check["allowed"]) == ("pending", False)

    confirmed = await service.post(
        consent_path(person),
        {"channel": "sms", "purpose": "marketing", "action": "confirm", "source": "sms_keyword",
         "reply": "YES", "metadata": {"message_sid": "SM123"}},
        expect=201,
    )  # fmt: skip
    assert confirmed["line"]["confirms_seq"] == asked["line"]["seq"]
    assert (confirmed["state"], confirmed["allowed"]) == ("granted", True)


async def test_confirming_with_nothing_pending_is_a_409(service: Api) -> None:
    person = await service.identify("sms", "+14155550102")
    problem = await service.post(
        consent_path(person),
        {
            "channel": "sms",
            "purpose": "marketing",
            "action": "confirm",
            "source": "sms_keyword",
            "reply": "YES",
        },
        expect=409,
    )
    assert problem["type"] == "urn:parley:problem:nothing-to-confirm"


async def test_email_marketing_granted_in_dialogue_waits_for_the_confirmation(
    service: Api,
) -> None:
    """Double opt-in: the address's owner confirms by the link Parley e-mails them
    (tests/backend/messaging/test_email_door.py follows it); an import that confirmed
    elsewhere says so with `confirm`."""
    person = await service.identify("web", "consent-email")
    granted = await service.post(
        consent_path(person),
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": "May we email you our monthly tips?", "reply": "yes please"},
        expect=201,
    )  # fmt: skip
    assert (granted["state"], granted["allowed"]) == ("pending", False)
    confirmed = await service.post(
        consent_path(person),
        {"channel": "email", "purpose": "marketing", "action": "confirm", "source": "import",
         "wording": "confirmed by e-mail in the old system"},
        expect=201,
    )  # fmt: skip
    assert (confirmed["state"], confirmed["allowed"]) == ("granted", True)


async def test_withdrawing_on_all_channels_stops_every_channel(service: Api) -> None:
    person = await service.identify("web", "consent-all")
    for channel in ("email", "web"):
        await service.post(
            consent_path(person),
            {"channel": channel, "purpose": "marketing", "action": "grant", "source": "api"},
            expect=201,
        )
    await service.post(
        consent_path(person),
        {"channel": "all", "purpose": "marketing", "action": "withdraw", "source": "dialogue",
         "wording": "(the person wrote)", "reply": "don't contact me again"},
        expect=201,
    )  # fmt: skip
    current = await service.get(consent_path(person))
    states = {(s["channel"], s["purpose"]): s["state"] for s in current["states"]}
    assert states == {
        (channel, "marketing"): "withdrawn" for channel in ("email", "sms", "voice", "web")
    }
    # Transactional messages were never withdrawn, so they may still go out.
    assert (await service.get(f"{consent_path(person)}/email/transactional"))["allowed"] is True


async def test_the_ledger_only_grows(service: Api) -> None:
    person = await service.identify("web", "consent-ledger")
    before = None
    for action in ("grant", "withdraw", "grant"):
        await service.post(
            consent_path(person),
            {"channel": "email", "purpose": "marketing", "action": action, "source": "api"},
            expect=201,
        )
        ledger = (await service.get(consent_path(person)))["ledger"]
        if before is not None:
            assert ledger[: len(before)] == before
        before = ledger
    assert [line["action"] for line in before or []] == ["grant", "withdraw", "grant"]


async def test_consent_evidence_and_channel_rules_are_enforced(service: Api) -> None:
    person = await service.identify("web", "consent-evidence")
    no_words = await service.post(
        consent_path(person),
        {
            "channel": "email",
            "purpose": "marketing",
            "action": "grant",
            "source": "dialogue",
            "wording": "?",
        },
        expect=422,
    )
    assert "reply" in no_words["detail"]
    all_grant = await service.post(
        consent_path(person),
        {"channel": "all", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=422,
    )
    assert all_grant["type"] == "urn:parley:problem:consent-channel-all"


async def test_an_imported_old_grant_does_not_override_a_newer_withdrawal(service: Api) -> None:
    person = await service.identify("web", "consent-import")
    await service.post(
        consent_path(person),
        {"channel": "email", "purpose": "marketing", "action": "withdraw", "source": "api"},
        expect=201,
    )
    imported = await service.post(
        consent_path(person),
        {"channel": "email", "purpose": "marketing", "action": "grant", "source": "import",
         "occurred_at": "2025-01-01T00:00:00Z"},
        expect=201,
    )  # fmt: skip
    assert imported["state"] == "withdrawn"


def line(seq: int, channel: str, action: str, minutes: int, pending: bool = False) -> ConsentEvent:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return ConsentEvent(
        seq=seq, channel=channel, purpose="marketing", action=action, pending=pending,
        occurred_at=at, source="api",
    )  # fmt: skip


def test_asking_again_never_takes_a_granted_consent_away() -> None:
    states = fold([line(1, "sms", "grant", 0, pending=True), line(2, "sms", "grant", 1),
                   line(3, "sms", "grant", 2, pending=True)])  # fmt: skip
    assert states[(Channel.SMS, Purpose.MARKETING)][0] is State.GRANTED


def test_the_fold_reads_the_ledger_in_time_order_not_arrival_order() -> None:
    states = fold([line(1, "email", "withdraw", 10), line(2, "email", "grant", 5)])
    assert states[(Channel.EMAIL, Purpose.MARKETING)] == (
        State.WITHDRAWN,
        datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
    )


def test_a_clock_can_stand_still_or_move() -> None:
    clock = FixedClock(datetime(2026, 3, 1, tzinfo=UTC))
    clock.advance(timedelta(days=1))
    assert clock.now() == datetime(2026, 3, 2, tzinfo=UTC)
