"""The one door for outbound texts and the inbox for texts people send, against the
local Twilio emulator driven by the real `twilio` library (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from twilio.request_validator import RequestValidator

from backend.api.app import create_app
from backend.api.keys import INBOX, SESSIONS, SMS_DOOR
from backend.api.tokens import Role
from backend.core.clock import FixedClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import Message
from backend.core.settings import Settings
from backend.devtools.twilio_emulator import OPTED_OUT_NUMBER
from backend.messaging.door import MessagePurpose, SendRefused
from backend.messaging.pacing import SendingPace
from backend.messaging.routes import REFUSAL_STATUS
from backend.messaging.sms_door import OutboundText, Sent
from backend.messaging.text_turns import PendingText
from message_rules.sms import segments
from tests.backend.conftest import BUSINESS_NUMBER as BUSINESS
from tests.backend.conftest import TWILIO_TOKEN, Api, StartTexting, TextingBackend

PERSON = "+14155552671"


@pytest.fixture
async def texting(start_texting: StartTexting) -> TextingBackend:
    return await start_texting()


# ------------------------------------------------------------------------------ sending


async def test_a_transactional_text_is_sent_recorded_and_its_delivery_reported(
    texting: TextingBackend,
) -> None:
    sent = await texting.api.post(
        "/api/v1/messages",
        {"to": "(415) 555-2671", "body": "Your demo is at 3pm.", "purpose": "transactional"},
        expect=201,
    )
    [message] = sent["messages"]
    assert message["to_address"] == PERSON and message["from_address"] == BUSINESS
    assert message["provider_sid"].startswith("SM")
    assert texting.sent_to(PERSON) == ["Your demo is at 3pm."]

    await texting.settle()
    stored = await texting.api.get(f"/api/v1/messages/{message['id']}")
    assert stored["status"] == "delivered"


async def test_marketing_goes_only_to_people_who_agreed(texting: TextingBackend) -> None:
    refused = await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "20% off this week!", "purpose": "marketing"},
        expect=409,
    )
    assert refused["type"] == "urn:parley:problem:consent-refused"
    assert texting.sent_to(PERSON) == []

    profile = await texting.api.identify("sms", PERSON)
    await texting.subscribe(profile["id"])
    await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "20% off this week!", "purpose": "marketing"},
        expect=201,
    )
    # The double opt-in question went out when the grant was pending; then the offer.
    assert texting.sent_to(PERSON)[1:] == ["20% off this week!"]

    await texting.texted(PERSON, "Stop")
    refused = await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "Last chance!", "purpose": "marketing"},
        expect=409,
    )
    assert refused["type"] == "urn:parley:problem:consent-refused"
    assert "Last chance!" not in texting.sent_to(PERSON)


async def test_a_long_reply_is_split_at_sentences_with_the_images_on_the_first_part(
    texting: TextingBackend,
) -> None:
    sentence = "Brightdesk gives your team one shared inbox for email, chat and SMS. "
    body = (sentence * 12).strip()
    asked = await texting.texted(PERSON, "What is Brightdesk?")
    sent = await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": body, "purpose": "conversational",
         "in_reply_to": asked["message_id"],
         "media_urls": ["https://brightdesk.example/inbox.png",
                        "https://brightdesk.example/team.png"]},
        expect=201,
    )  # fmt: skip
    parts = [m["body"] for m in sent["messages"]]
    assert len(parts) > 1
    assert " ".join(parts) == body
    assert all(part.endswith(".") and segments(part) <= 3 for part in parts)
    assert [m["part"] for m in sent["messages"]] == list(range(1, len(parts) + 1))
    assert texting.sent_to(PERSON) == parts
    media = [m.media for m in texting.twilio.messages.values()]
    assert media[0] == [
        "https://brightdesk.example/inbox.png", "https://brightdesk.example/team.png",
    ]  # fmt: skip
    assert all(m == [] for m in media[1:])


async def test_a_conversational_text_must_answer_a_text_the_person_sent(
    texting: TextingBackend,
) -> None:
    """Conversational texts are the bot answering, and so need no marketing consent and
    are never held for the night: a text in reply to nothing (or to someone else's
    text) is refused, so no caller can send marketing under that name."""
    text = {"to": PERSON, "body": "Hey, did you see our sale?", "purpose": "conversational"}
    refused = await texting.api.post("/api/v1/messages", text, expect=422)
    assert refused["type"] == "urn:parley:problem:not-a-reply"
    other = await texting.texted("+14155550100", "hi")
    refused = await texting.api.post(
        "/api/v1/messages", {**text, "in_reply_to": other["message_id"]}, expect=422
    )
    assert refused["type"] == "urn:parley:problem:not-a-reply"
    assert texting.sent_to(PERSON) == []


async def test_the_same_send_key_sends_once(texting: TextingBackend) -> None:
    text = {"to": PERSON, "body": "Reminder: demo tomorrow.", "purpose": "transactional",
            "send_key": "enrolment-7:step-2:1"}  # fmt: skip
    first = await texting.api.post("/api/v1/messages", text, expect=201)
    again = await texting.api.post("/api/v1/messages", text, expect=200)
    same = [(m["id"], m["provider_sid"], m["body"]) for m in first["messages"]]
    assert [(m["id"], m["provider_sid"], m["body"]) for m in again["messages"]] == same
    assert texting.sent_to(PERSON) == ["Reminder: demo tomorrow."]


async def test_twilios_refusals_are_recorded_and_explained(texting: TextingBackend) -> None:
    invalid = await texting.api.post(
        "/api/v1/messages",
        {"to": "+15005550001", "body": "hi", "purpose": "transactional"},
        expect=None,
    )
    # +15005550001 is not even a valid number to phonenumbers: refused before Twilio.
    assert invalid["_status"] == 422

    profile = await texting.api.identify("sms", OPTED_OUT_NUMBER)
    refused = await texting.api.post(
        "/api/v1/messages",
        {"to": OPTED_OUT_NUMBER, "body": "hi", "purpose": "transactional"},
        expect=409,
    )
    assert refused["type"] == "urn:parley:problem:recipient-unsubscribed"
    states = await texting.consent(profile["id"])
    assert states[("sms", "marketing")] == states[("sms", "transactional")] == "withdrawn"
    page = await texting.api.get(f"/api/v1/profiles/{profile['id']}/messages")
    assert [(m["status"], m["error_code"]) for m in page["items"]] == [("failed", 21610)]


async def test_an_undeliverable_text_reports_twilios_error(texting: TextingBackend) -> None:
    texting.twilio.undeliverable.add(PERSON)
    sent = await texting.api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "transactional"}, expect=201
    )
    await texting.settle()
    stored = await texting.api.get(f"/api/v1/messages/{sent['messages'][0]['id']}")
    assert (stored["status"], stored["error_code"]) == ("undelivered", 30003)


async def test_without_a_twilio_token_sending_answers_503(
    settings: Settings,
    clock: FixedClock,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    issue_token: Callable[[Role], Awaitable[str]],
) -> None:
    client = await aiohttp_client(create_app(settings, clock))
    api = Api(client, await issue_token(Role.SERVICE))
    problem = await api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "transactional"}, expect=503
    )
    assert problem["type"] == "urn:parley:problem:sms-not-configured"


# ---------------------------------------------------------------------- status callbacks


async def _callback(
    texting: TextingBackend, message_id: int, status: str, token: str = TWILIO_TOKEN, url: str | None = None,
    signature: str | None = None, **extra: str,
) -> int:  # fmt: skip
    stored = await texting.api.get(f"/api/v1/messages/{message_id}")
    form = {"MessageSid": stored["provider_sid"], "MessageStatus": status, **extra}
    target = f"{texting.url}/twilio/status?message={message_id}"
    signed = RequestValidator(token).compute_signature(url or target, form)
    headers = {} if signature == "" else {"X-Twilio-Signature": signature or signed}
    response = await texting.api.client.session.post(target, data=form, headers=headers)
    return response.status


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({}, 204),
        ({"token": "someone-elses-token"}, 403),
        ({"signature": ""}, 403),
        ({"url": "https://elsewhere.example/twilio/status?message=1"}, 403),
    ],
    ids=["valid", "forged", "missing", "wrong-url"],
)
async def test_only_status_callbacks_signed_by_twilio_change_a_message(
    texting: TextingBackend, how: dict[str, str], expected: int
) -> None:
    sent = await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "hi", "purpose": "transactional"},
        expect=201,
    )
    await texting.settle()
    message_id = sent["messages"][0]["id"]
    before = await texting.api.get(f"/api/v1/messages/{message_id}")
    # A later status than any the emulator reports: only a valid one may land.
    assert await _callback(texting, message_id, "read", **how) == expected
    after = await texting.api.get(f"/api/v1/messages/{message_id}")
    assert after["status"] == ("read" if expected == 204 else before["status"])


async def test_a_late_callback_never_turns_delivered_back_into_sent(
    texting: TextingBackend,
) -> None:
    sent = await texting.api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "transactional"}, expect=201
    )
    await texting.settle()
    message_id = sent["messages"][0]["id"]
    assert await _callback(texting, message_id, "sent") == 204
    stored = await texting.api.get(f"/api/v1/messages/{message_id}")
    assert stored["status"] == "delivered"


# ------------------------------------------------------------------------------- keywords

STOP_WORDS = ["STOP", "stop", "Stop.", " STOPALL ", "unsubscribe", "Cancel", "END", "quit",
              "revoke", "OPTOUT", "opt-out", "\uff53\uff54\uff4f\uff50"]  # fmt: skip


# The spellings are the channel's text rule, not the database's: they run on SQLite;
# one of each keyword runs on PostgreSQL too (the tests below them).
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@SQLITE_ONLY
@pytest.mark.parametrize("word", STOP_WORDS)
async def test_every_stop_word_withdraws_sms_consent_with_one_confirmation(
    texting: TextingBackend, word: str
) -> None:
    receipt = await texting.texted(PERSON, word)
    assert (receipt["_status"], receipt["keyword"], receipt["handled"]) == (201, "stop", True)
    states = await texting.consent(receipt["profile_id"])
    assert states[("sms", "marketing")] == states[("sms", "transactional")] == "withdrawn"
    [confirmation] = texting.sent_to(PERSON)
    assert "unsubscribed" in confirmation and "START" in confirmation


async def test_a_retried_webhook_is_recorded_and_answered_once(texting: TextingBackend) -> None:
    text = {"sid": "SM" + "a" * 32, "from": PERSON, "to": BUSINESS, "body": "STOP"}
    first = await texting.api.post("/api/v1/inbound-texts", text, expect=201)
    again = await texting.api.post("/api/v1/inbound-texts", text, expect=200)
    assert again["duplicate"] is True and again["message_id"] == first["message_id"]
    await texting.keywords_answered()
    assert len(texting.sent_to(PERSON)) == 1
    ledger = await texting.api.get(f"/api/v1/profiles/{first['profile_id']}/consent")
    assert len(ledger["ledger"]) == 2  # marketing and transactional, once


@SQLITE_ONLY
@pytest.mark.parametrize("word", ["HELP", "help", "Info", "  info! "])
async def test_help_answers_with_the_business_and_how_to_stop(
    texting: TextingBackend, word: str
) -> None:
    receipt = await texting.texted(PERSON, word)
    assert (receipt["keyword"], receipt["handled"]) == ("help", True)
    [answer] = texting.sent_to(PERSON)
    assert answer.startswith("Brightdesk") and "STOP" in answer
    assert "Msg & data rates may apply" in answer
    assert await texting.consent(receipt["profile_id"]) == {}


@SQLITE_ONLY
@pytest.mark.parametrize("word", ["START", "start", "Unstop", "YES", "yes."])
async def test_start_after_stop_subscribes_again(texting: TextingBackend, word: str) -> None:
    stopped = await texting.texted(PERSON, "STOP")
    receipt = await texting.texted(PERSON, word)
    assert (receipt["keyword"], receipt["handled"]) == ("start", True)
    states = await texting.consent(stopped["profile_id"])
    assert states[("sms", "transactional")] == "granted"
    # Marketing was never agreed to, so START does not invent it.
    assert states[("sms", "marketing")] == "withdrawn"
    assert len(texting.sent_to(PERSON)) == 2
    assert "you are subscribed" in texting.sent_to(PERSON)[-1]


async def test_start_restores_marketing_the_person_had_agreed_to(texting: TextingBackend) -> None:
    profile = await texting.api.identify("sms", PERSON)
    await texting.subscribe(profile["id"])
    await texting.texted(PERSON, "STOP")
    await texting.texted(PERSON, "START")
    states = await texting.consent(profile["id"])
    assert states[("sms", "marketing")] == states[("sms", "transactional")] == "granted"


async def test_yes_confirms_a_pending_double_opt_in(texting: TextingBackend) -> None:
    profile = await texting.api.identify("sms", PERSON)
    await texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "sms", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": "Can we text you offers? Reply STOP to opt out.", "reply": "sure"},
        expect=201,
    )  # fmt: skip
    assert (await texting.consent(profile["id"]))[("sms", "marketing")] == "pending"
    receipt = await texting.texted(PERSON, "Yes")
    assert (receipt["keyword"], receipt["handled"]) == ("start", True)
    assert (await texting.consent(profile["id"]))[("sms", "marketing")] == "granted"


async def test_yes_in_conversation_goes_to_the_bot(texting: TextingBackend) -> None:
    receipt = await texting.texted(PERSON, "yes")
    assert (receipt["keyword"], receipt["handled"]) == (None, False)
    assert texting.sent_to(PERSON) == []


async def test_words_around_a_keyword_make_it_a_message_for_the_bot(
    texting: TextingBackend,
) -> None:
    receipt = await texting.texted(PERSON, "please stop texting me")
    assert (receipt["keyword"], receipt["handled"]) == (None, False)
    assert texting.sent_to(PERSON) == []


@pytest.mark.parametrize(("opt_out_type", "state"), [("STOP", "withdrawn"), ("HELP", None)])
async def test_twilio_advanced_opt_out_is_honoured_without_a_second_answer(
    texting: TextingBackend, opt_out_type: str, state: str | None
) -> None:
    # Twilio matched a keyword it was told about (here "arrêt") and answered it itself.
    receipt = await texting.texted(PERSON, "arrêt", opt_out_type=opt_out_type)
    assert receipt["keyword"] == opt_out_type.lower() and receipt["handled"] is True
    states = await texting.consent(receipt["profile_id"])
    assert states.get(("sms", "transactional")) == state
    assert texting.sent_to(PERSON) == []


async def test_a_compliance_text_answers_one_keyword_once(texting: TextingBackend) -> None:
    not_a_reply = await texting.api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "compliance"}, expect=409
    )
    assert not_a_reply["type"] == "urn:parley:problem:not-a-keyword-reply"
    receipt = await texting.texted(PERSON, "HELP")
    again = await texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "Help again", "purpose": "compliance",
         "in_reply_to": receipt["message_id"]},
        expect=409,
    )  # fmt: skip
    assert again["type"] == "urn:parley:problem:already-answered"
    assert len(texting.sent_to(PERSON)) == 1


async def test_texts_and_calls_from_one_number_are_one_person(texting: TextingBackend) -> None:
    caller = await texting.api.identify("voice", PERSON)
    receipt = await texting.texted(PERSON, "hi there")
    assert receipt["profile_id"] == caller["id"]
    await texting.app[INBOX].attach_profile(await _pending(texting, receipt["message_id"]))
    person = await texting.api.get(f"/api/v1/profiles/{caller['id']}")
    assert {(i["kind"], i["address"]) for i in person["identities"]} == {
        ("sms", PERSON), ("voice", PERSON),
    }  # fmt: skip


async def test_a_text_from_a_new_number_gets_its_profile_before_the_bot_answers_it(
    texting: TextingBackend,
) -> None:
    # Twilio waits while a text is recorded: a new number's profile is not made then.
    first = await texting.texted(PERSON, "hi there")
    second = await texting.texted(PERSON, "anyone?")
    assert first["profile_id"] is None and second["profile_id"] is None
    await texting.app[INBOX].attach_profile(await _pending(texting, first["message_id"]))
    found = await texting.api.identify("sms", PERSON)
    page = await texting.api.get(f"/api/v1/profiles/{found['id']}/messages")
    assert [m["body"] for m in page["items"]] == ["anyone?", "hi there"]
    third = await texting.texted(PERSON, "hello again")
    assert third["profile_id"] == found["id"]


async def _pending(texting: TextingBackend, message_id: int) -> PendingText:
    async with texting.app[SESSIONS]() as session:
        row = await session.get(Message, message_id)
        assert row is not None
        return PendingText(row.id, row.profile_id, row.provider_sid or "", row.from_address,
                           row.to_address, row.body, [], row.keyword, row.turn_attempts)  # fmt: skip


async def test_a_persons_texts_are_listed_newest_first(texting: TextingBackend) -> None:
    receipt = await texting.texted(PERSON, "HELP")
    page = await texting.api.get(f"/api/v1/profiles/{receipt['profile_id']}/messages")
    assert [(m["direction"], m["keyword"], m["purpose"]) for m in page["items"]] == [
        ("outbound", None, "compliance"),
        ("inbound", "help", None),
    ]
    assert page["items"][0]["in_reply_to"] == receipt["message_id"]


# ---------------------------------------------------------------------------------- pace


async def test_one_number_sends_at_its_rate_and_answers_busy_beyond_the_wait(
    settings: Settings, clock: FixedClock
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    engine = create_engine(settings.resolved_database_url)
    try:
        pace = SendingPace(create_session_factory(engine), clock, 2.0, 1.0, sleep)
        for _ in range(3):
            await pace.wait_turn(BUSINESS)
        await pace.wait_turn("+15005550007")  # another number has its own pace
        assert waits == [0.5, 1.0]
        with pytest.raises(SendRefused) as busy:
            await pace.wait_turn(BUSINESS)
        assert REFUSAL_STATUS[busy.value.kind] == 429 and busy.value.retry_after == pytest.approx(
            0.5
        )
        clock.advance(timedelta(seconds=5))
        await pace.wait_turn(BUSINESS)
        assert waits == [0.5, 1.0]
    finally:
        await engine.dispose()


# Replicas share the pace through PostgreSQL's row locks (SQLite is one process).
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_replicas_share_one_pace_per_number(settings: Settings, clock: FixedClock) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    engines = [create_engine(settings.resolved_database_url) for _ in range(4)]
    try:
        replicas = [
            SendingPace(create_session_factory(e), clock, 10.0, 60.0, sleep) for e in engines
        ]
        await asyncio.gather(*(r.wait_turn(BUSINESS) for r in replicas for _ in range(5)))
    finally:
        for engine in engines:
            await engine.dispose()
    # 20 sends at 10 a second: one at once, then every 0.1 s, no two in the same slot.
    assert sorted(round(w, 3) for w in waits) == [round(0.1 * n, 3) for n in range(1, 20)]


async def test_a_pending_sms_opt_in_texts_the_question_and_yes_confirms_it(
    texting: TextingBackend,
) -> None:
    profile = await texting.api.identify("web", "chat-session-1")
    await texting.api.post(
        f"/api/v1/profiles/{profile['id']}/identities", {"kind": "sms", "address": PERSON}
    )
    await texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "sms", "purpose": "marketing", "action": "grant", "source": "dialogue",
         "wording": "Can we text you offers? Reply STOP to opt out.", "reply": "yes please"},
        expect=201,
    )  # fmt: skip
    [question] = texting.sent_to(PERSON)
    assert question.startswith("Brightdesk: reply YES to confirm")
    assert "STOP" in question and "Msg & data rates may apply" in question

    receipt = await texting.texted(PERSON, "YES")
    assert receipt["profile_id"] == profile["id"] and receipt["handled"] is True
    assert (await texting.consent(profile["id"]))[("sms", "marketing")] == "granted"


# ------------------------------------------------------------- sends with an unknown outcome


async def test_a_text_twilio_took_while_its_answer_was_lost_is_not_sent_twice(
    texting: TextingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = texting.app[SMS_DOOR]
    taken = door.texts.create

    async def answer_lost(*args: Any, **kwargs: Any) -> Any:
        await taken(*args, **kwargs)
        raise TimeoutError("no answer from Twilio")

    text = {"to": PERSON, "body": "Your code is 4711.", "purpose": "transactional",
            "send_key": "login:4711"}  # fmt: skip
    with monkeypatch.context() as patched:
        patched.setattr(door.texts, "create", answer_lost)
        unknown = await texting.api.post("/api/v1/messages", text, expect=502)
    assert unknown["type"] == "urn:parley:problem:twilio-unavailable"

    again = await texting.api.post("/api/v1/messages", text, expect=200)
    [message] = again["messages"]
    assert message["provider_sid"] == next(iter(texting.twilio.messages))
    assert texting.sent_to(PERSON) == ["Your code is 4711."]


async def test_a_text_that_never_reached_twilio_is_sent_by_the_retry(
    texting: TextingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = texting.app[SMS_DOOR]

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    text = {"to": PERSON, "body": "Your code is 4712.", "purpose": "transactional",
            "send_key": "login:4712"}  # fmt: skip
    with monkeypatch.context() as patched:
        patched.setattr(door.texts, "create", unreachable)
        await texting.api.post("/api/v1/messages", text, expect=502)
    assert texting.sent_to(PERSON) == []

    again = await texting.api.post("/api/v1/messages", text, expect=200)
    assert again["messages"][0]["provider_sid"].startswith("SM")
    assert texting.sent_to(PERSON) == ["Your code is 4712."]


async def test_a_text_recorded_before_a_crash_waits_until_it_cannot_be_in_flight(
    texting: TextingBackend, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = texting.app[SMS_DOOR]
    text = {"to": PERSON, "body": "See you at 3pm.", "purpose": "transactional",
            "send_key": "reminder:42"}  # fmt: skip
    # The process died after recording the text and before calling Twilio.
    recorded = door._parts(
        OutboundText(PERSON, text["body"], MessagePurpose.TRANSACTIONAL, send_key="reminder:42"),
        None,
    )
    async with texting.app[SESSIONS].begin() as session:
        session.add_all(recorded)

    # Another replica asks while the first could still be sending: it is told to wait.
    busy = await texting.api.post("/api/v1/messages", text, expect=409)
    assert busy["type"] == "urn:parley:problem:send-in-progress"
    assert texting.sent_to(PERSON) == []

    clock.advance(door.in_flight)
    await texting.api.post("/api/v1/messages", text, expect=200)
    await texting.api.post("/api/v1/messages", text, expect=200)
    assert texting.sent_to(PERSON) == ["See you at 3pm."]


async def test_a_late_retry_does_not_send_to_someone_who_withdrew_meanwhile(
    texting: TextingBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = await texting.api.identify("sms", PERSON)
    await texting.subscribe(profile["id"])
    door = texting.app[SMS_DOOR]

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    text = {"to": PERSON, "body": "Spring sale: 20% off.", "purpose": "marketing",
            "send_key": "spring:1"}  # fmt: skip
    with monkeypatch.context() as patched:
        patched.setattr(door.texts, "create", unreachable)
        await texting.api.post("/api/v1/messages", text, expect=502)
    await texting.texted(PERSON, "STOP")
    await texting.twilio.settled()

    refused = await texting.api.post("/api/v1/messages", text, expect=409)
    assert refused["type"] == "urn:parley:problem:consent-refused"
    assert "Spring sale: 20% off." not in texting.sent_to(PERSON)


async def test_texts_sent_together_are_each_answered_in_their_place(
    texting: TextingBackend,
) -> None:
    """The scheduler hands the door a batch: each text is checked, sent and answered on
    its own, and Twilio's sids are stored for the ones it took."""
    door = texting.app[SMS_DOOR]
    person = await texting.api.identify("sms", PERSON)
    await texting.subscribe(person["id"])
    stranger = "+14155550177"
    sale = "Spring sale: 10% off this week. Reply STOP to opt out."
    earlier = await door.send(
        OutboundText(PERSON, "Your order shipped.", MessagePurpose.TRANSACTIONAL, send_key="o:1")
    )
    assert isinstance(earlier, Sent)
    texted, refused, repeated = await door.send_many(
        [
            OutboundText(PERSON, sale, MessagePurpose.MARKETING, send_key="sale:1"),
            OutboundText(stranger, sale, MessagePurpose.MARKETING, send_key="sale:2"),
            OutboundText(
                PERSON, "Your order shipped.", MessagePurpose.TRANSACTIONAL, send_key="o:1"
            ),
        ]
    )
    assert isinstance(texted, Sent) and not texted.repeated
    assert isinstance(refused, SendRefused) and refused.kind == "consent-refused"
    assert isinstance(repeated, Sent) and repeated.repeated
    assert repeated.messages[0].id == earlier.messages[0].id
    assert texting.sent_to(PERSON)[-2:] == ["Your order shipped.", sale]
    assert texting.sent_to(stranger) == []
    stored = await texting.api.get(f"/api/v1/messages/{texted.messages[0].id}")
    assert stored["provider_sid"].startswith("SM") and stored["status"] != "failed"
