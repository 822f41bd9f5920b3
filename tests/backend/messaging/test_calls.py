"""The one door for outbound calls, against the real app and the local Twilio: consent
at call time, what the person hears, where their answer goes, idempotent send keys, and
Twilio's call progress callbacks (signed, forward only)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from backend.api.keys import CALL_DOOR, WORKER
from backend.core.clock import FixedClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import Enrolment
from backend.core.settings import Settings
from backend.devtools.twilio_emulator import INVALID_NUMBER
from backend.messaging.call_door import CallDoor, OutboundCall, Placed
from backend.messaging.door import FollowUp, MessagePurpose, SendRefused
from backend.messaging.held import Held
from backend.messaging.routes import REFUSAL_STATUS
from tests.backend.conftest import BUSINESS_NUMBER as BUSINESS
from tests.backend.conftest import TWILIO_TOKEN, StartTexting, TextingBackend

PERSON = "+14155552671"
NOWHERE = "http://127.0.0.1:9/twilio/call-status"  # callbacks sent here are lost
TRANSACTIONAL, MARKETING = MessagePurpose.TRANSACTIONAL, MessagePurpose.MARKETING
SAFE = "!$'()*,:@/?"  # what the voice channel leaves unencoded in its URLs' queries


@dataclass
class VoiceChannel:
    """Stands in for Rasa's voice channel (tests/bot tests the real one): keeps what
    Twilio posts to its gather webhook, whether Twilio signed it over the URL as
    requested, and answers a word with a goodbye."""

    base: str = ""
    heard: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    signed: list[bool] = field(default_factory=list)

    async def gather(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        url = f"{self.base}{request.raw_path}"
        signature = request.headers.get("X-Twilio-Signature", "")
        self.heard.append((url, form))
        self.signed.append(RequestValidator(TWILIO_TOKEN).validate(url, form, signature))
        said = form.get("SpeechResult") or form.get("Digits")
        answer = f"Great: {said}. Goodbye!" if said else "Sorry, I didn't catch that."
        return web.Response(
            text=f"<Response><Say>{answer}</Say><Hangup /></Response>", content_type="text/xml"
        )


@dataclass
class Calling:
    texting: TextingBackend
    voice: VoiceChannel

    @property
    def door(self) -> CallDoor:
        return self.texting.app[CALL_DOOR]

    async def call(self, say: str, purpose: MessagePurpose = TRANSACTIONAL, **extra: Any) -> Placed:
        placed = await self.door.call(OutboundCall(PERSON, say, purpose, **extra))
        assert isinstance(placed, Placed), placed
        return placed

    async def message(self, message_id: int) -> dict[str, Any]:
        return await self.texting.api.get(f"/api/v1/messages/{message_id}")

    def placed_to(self, number: str = PERSON) -> list[str]:
        return [c.sid for c in self.texting.twilio.calls.values() if c.to == number]

    async def gather(self, sid: str, answer: dict[str, str]) -> dict[str, Any]:
        url = f"{self.texting.settings.resolved_twilio_api_url}/emulator/call/{sid}/gather"
        async with self.texting.client.session.post(url, json=answer) as response:
            assert response.status == 200, await response.text()
            step: dict[str, Any] = await response.json()
            return step

    async def callback(
        self, message_id: int, status: str, sid: str, token: str = TWILIO_TOKEN,
        signature: str | None = None, url: str | None = None,
    ) -> int:  # fmt: skip
        """Post a call status callback as Twilio does; the HTTP status answered."""
        form = {"CallSid": sid, "CallStatus": status, "AccountSid": "AC" + "0" * 32,
                "From": BUSINESS, "To": PERSON, "Direction": "outbound-api",
                "CallbackSource": "call-progress-events", "ApiVersion": "2010-04-01"}  # fmt: skip
        target = f"{self.texting.url}/twilio/call-status?message={message_id}"
        signed = RequestValidator(token).compute_signature(url or target, form)
        headers = {} if signature == "" else {"X-Twilio-Signature": signature or signed}
        response = await self.texting.client.session.post(target, data=form, headers=headers)
        return response.status


@pytest.fixture
async def calling(
    settings: Settings,
    start_texting: StartTexting,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Calling:
    # `settings` first: the servers stop before a PostgreSQL test database is dropped.
    voice = VoiceChannel()
    app = web.Application()
    app.router.add_post("/webhooks/voice/gather", voice.gather)
    server = await aiohttp_server(app)
    voice.base = f"http://127.0.0.1:{server.port}"
    # The voice channel is where Rasa is: the gather URL is built from rasa_url.
    return Calling(await start_texting(rasa_port=server.port), voice)


async def refusal(placing: Awaitable[Placed | Held]) -> SendRefused:
    with pytest.raises(SendRefused) as raised:
        await placing
    return raised.value


# ------------------------------------------------------------------------------ consent


async def test_a_marketing_call_needs_voice_marketing_consent_not_just_sms(
    calling: Calling,
) -> None:
    nobody = await refusal(calling.call("Spring sale: 20% off!", MARKETING))
    assert (REFUSAL_STATUS[nobody.kind], nobody.kind) == (409, "consent-refused")

    profile = await calling.texting.api.identify("sms", PERSON)
    await calling.texting.subscribe(profile["id"])  # texts yes, calls not asked
    texts_only = await refusal(calling.call("Spring sale: 20% off!", MARKETING))
    assert texts_only.kind == "consent-refused"
    assert calling.placed_to() == []

    await calling.texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "voice", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )
    placed = await calling.call("Spring sale: 20% off!", MARKETING)
    assert placed.message.profile_id == uuid.UUID(profile["id"])
    assert calling.placed_to() == [placed.message.provider_sid]


async def test_a_marketing_call_at_night_is_held_until_eight_and_placed_then(
    calling: Calling, clock: FixedClock
) -> None:
    profile = await calling.texting.api.identify("sms", PERSON)
    await calling.texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "voice", "purpose": "marketing", "action": "grant", "source": "api"},
        expect=201,
    )
    clock.advance(datetime(2026, 3, 3, 7, tzinfo=UTC) - clock.now())  # 23:00 in SF
    held = await calling.door.call(OutboundCall(PERSON, "Spring sale: 20% off!", MARKETING))
    assert isinstance(held, Held)
    assert (held.message.reason, held.message.channel) == ("quiet-hours", "voice")
    assert held.message.not_before == datetime(2026, 3, 3, 16, tzinfo=UTC)  # 08:00 in SF
    assert calling.placed_to() == []

    clock.advance(timedelta(hours=9))
    assert await calling.texting.app[WORKER].release_held() == 1
    [sid] = calling.placed_to()
    released = await calling.texting.api.get(f"/api/v1/held-messages/{held.message.id}")
    assert released["status"] == "sent"
    assert (await calling.message(released["message_id"]))["provider_sid"] == sid


async def test_a_transactional_call_goes_unless_voice_consent_was_withdrawn(
    calling: Calling,
) -> None:
    placed = await calling.call("Your demo starts in one hour.")
    assert placed.message.provider_sid is not None

    profile = await calling.texting.api.identify("voice", PERSON)
    await calling.texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "voice", "purpose": "transactional", "action": "withdraw", "source": "api"},
        expect=201,
    )
    refused = await refusal(calling.call("Your demo starts in one hour."))
    assert (REFUSAL_STATUS[refused.kind], refused.kind) == (409, "consent-refused")
    assert len(calling.placed_to()) == 1


# --------------------------------------------------------------- what the person hears


async def test_a_placed_call_speaks_the_text_and_the_answer_goes_to_the_voice_channel(
    calling: Calling,
) -> None:
    placed = await calling.call(
        "Hi Ada! Your **demo** is tomorrow at 3pm. Shall I text you the link?"
    )
    spoken = "Hi Ada! Your demo is tomorrow at 3pm. Shall I text you the link?"
    row = placed.message
    assert (row.channel, row.direction, row.to_address, row.from_address, row.body) == (
        "voice", "outbound", PERSON, BUSINESS, spoken,
    )  # fmt: skip
    assert (row.status, placed.repeated) == ("queued", False)
    assert row.provider_sid is not None and row.provider_sid.startswith("CA")

    await calling.texting.settle()  # it rings, and the person picks up
    call = calling.texting.twilio.calls[row.provider_sid]
    assert call.transcript == [{"speaker": "bot", "input": "speech", "text": spoken}]
    gather = f"{calling.voice.base}/webhooks/voice/gather"
    prompt = quote(spoken, safe=SAFE)  # re-asked after a silence: all of it, being short
    assert call.listening is not None
    assert call.listening["action"] == f"{gather}?prompt={prompt}"
    assert call.listening["input"] == "speech dtmf"
    assert (await calling.message(row.id))["status"] == "delivered"  # picked up

    answered = await calling.gather(row.provider_sid, {"speech": "yes please"})
    assert answered["said"] == ["Great: yes please. Goodbye!"]
    [(url, form)] = calling.voice.heard
    assert url == f"{gather}?prompt={prompt}"
    # The voice channel takes the person (To) of a call Parley placed as the conversation.
    assert (form["Direction"], form["From"], form["To"], form["SpeechResult"]) == (
        "outbound-api", BUSINESS, PERSON, "yes please",
    )  # fmt: skip
    assert calling.voice.signed == [True]
    assert call.statuses == ["queued", "initiated", "ringing", "in-progress", "completed"]
    assert (await calling.message(row.id))["status"] == "delivered"


async def test_a_silent_person_is_asked_again_by_the_voice_channel(calling: Calling) -> None:
    plans = "We have three plans for teams of every size, each with a free trial."
    placed = await calling.call(" ".join([plans] * 5 + ["Shall I text you the link?"]))
    await calling.texting.settle()
    assert placed.message.provider_sid is not None

    silent = await calling.gather(placed.message.provider_sid, {})
    assert silent["said"] == ["Sorry, I didn't catch that."]
    [(url, form)] = calling.voice.heard
    # What is re-asked: the last sentences, at most about 300 characters, as the voice
    # channel re-asks its own questions.
    question = " ".join([plans] * 3 + ["Shall I text you the link?"])
    prompt = quote(question, safe=SAFE)
    assert url == f"{calling.voice.base}/webhooks/voice/gather?prompt={prompt}&silence=1"
    assert "SpeechResult" not in form
    assert calling.voice.signed == [True]


async def test_a_follow_up_call_keeps_its_enrolment_step_and_variant(
    calling: Calling, clock: FixedClock
) -> None:
    profile = await calling.texting.api.identify("voice", PERSON)
    enrolment = Enrolment(
        sequence="demo_reminder", profile_id=uuid.UUID(profile["id"]), status="active",
        exit_reason=None, current_step="call", trigger_type="demo_booked",
        enrolled_at=clock.now(), updated_at=clock.now(),
    )  # fmt: skip
    engine = create_engine(calling.texting.settings.resolved_database_url)
    try:
        async with create_session_factory(engine).begin() as session:
            session.add(enrolment)
    finally:
        await engine.dispose()

    placed = await calling.call(
        "Your demo is tomorrow.", follow_up=FollowUp(enrolment.id, "call", "friendly")
    )
    row = placed.message
    assert (row.enrolment_id, row.sequence_step, row.variant) == (
        enrolment.id, "call", "friendly",
    )  # fmt: skip
    assert row.profile_id == uuid.UUID(profile["id"])


# ---------------------------------------------------------------------------- send keys


async def test_the_same_send_key_places_one_call(calling: Calling) -> None:
    first = await calling.call("Your demo is tomorrow.", send_key="demo:7:call")
    again = await calling.call("Your demo is tomorrow.", send_key="demo:7:call")
    assert (again.repeated, again.message.id) == (True, first.message.id)
    assert again.message.provider_sid == first.message.provider_sid
    assert calling.placed_to() == [first.message.provider_sid]


def answer_lost(create: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Twilio places the call, and its answer never arrives."""

    async def lost(*args: Any, **kwargs: Any) -> Any:
        await create(*args, **kwargs)
        raise TimeoutError("no answer from Twilio")

    return lost


async def test_a_call_twilio_took_while_its_answer_was_lost_is_not_placed_twice(
    calling: Calling, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(calling.door.calls, "create", answer_lost(calling.door.calls.create))
        unknown = await refusal(calling.call("See you at 3pm.", send_key="reminder:1"))
    assert (REFUSAL_STATUS[unknown.kind], unknown.kind) == (502, "twilio-unavailable")
    await calling.texting.settle()  # Twilio's callbacks name the call meanwhile

    again = await calling.call("See you at 3pm.", send_key="reminder:1")
    assert again.repeated
    assert calling.placed_to() == [again.message.provider_sid]


async def test_a_call_whose_answer_and_callbacks_were_lost_is_found_in_twilios_list(
    calling: Calling, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(calling.door.calls, "create", answer_lost(calling.door.calls.create))
        patched.setattr(calling.door, "status_callback_url", NOWHERE)
        await refusal(calling.call("See you at 3pm.", send_key="reminder:2"))
        await calling.texting.settle()
    [sid] = calling.placed_to()

    again = await calling.call("See you at 3pm.", send_key="reminder:2")
    assert (again.repeated, again.message.provider_sid) == (True, sid)
    assert again.message.status == "delivered"  # Twilio lists it in progress
    assert calling.placed_to() == [sid]


async def test_a_call_that_never_reached_twilio_is_placed_by_the_retry(
    calling: Calling, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(calling.door.calls, "create", unreachable)
        await refusal(calling.call("See you at 3pm.", send_key="reminder:3"))
    assert calling.placed_to() == []

    again = await calling.call("See you at 3pm.", send_key="reminder:3")
    assert again.repeated
    assert calling.placed_to() == [again.message.provider_sid]


async def test_a_call_recorded_before_a_crash_waits_until_it_cannot_be_in_flight(
    calling: Calling, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def crashed(*args: Any, **kwargs: Any) -> None:
        """The process died after recording the call and before calling Twilio."""

    with monkeypatch.context() as patched:
        patched.setattr(calling.door, "_place", crashed)
        await calling.call("See you at 3pm.", send_key="reminder:4")
    busy = await refusal(calling.call("See you at 3pm.", send_key="reminder:4"))
    assert (REFUSAL_STATUS[busy.kind], busy.kind) == (409, "send-in-progress")
    assert busy.retry_after is not None and busy.retry_after > 0
    assert calling.placed_to() == []

    clock.advance(calling.door.in_flight)
    await calling.call("See you at 3pm.", send_key="reminder:4")
    await calling.call("See you at 3pm.", send_key="reminder:4")
    assert len(calling.placed_to()) == 1


async def test_a_late_retry_does_not_call_someone_who_withdrew_meanwhile(
    calling: Calling, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = await calling.texting.api.identify("voice", PERSON)

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise OSError("connection refused")

    with monkeypatch.context() as patched:
        patched.setattr(calling.door.calls, "create", unreachable)
        await refusal(calling.call("Your demo is tomorrow.", send_key="reminder:5"))
    await calling.texting.api.post(
        f"/api/v1/profiles/{profile['id']}/consent",
        {"channel": "voice", "purpose": "transactional", "action": "withdraw", "source": "api"},
        expect=201,
    )
    refused = await refusal(calling.call("Your demo is tomorrow.", send_key="reminder:5"))
    assert refused.kind == "consent-refused"
    [row] = refused.messages
    assert (await calling.message(row.id))["status"] == "failed"
    assert calling.placed_to() == []


async def test_a_send_key_used_for_a_text_is_not_a_call(calling: Calling) -> None:
    await calling.texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "hi", "purpose": "transactional", "send_key": "hello:1"},
        expect=201,
    )
    refused = await refusal(calling.call("Hello!", send_key="hello:1"))
    assert (REFUSAL_STATUS[refused.kind], refused.kind) == (409, "send-key-reused")
    assert calling.placed_to() == []


async def test_a_send_key_used_for_a_call_is_not_a_text(calling: Calling) -> None:
    await calling.call("Hello!", send_key="hello:2")
    refused = await calling.texting.api.post(
        "/api/v1/messages",
        {"to": PERSON, "body": "Hello!", "purpose": "transactional", "send_key": "hello:2"},
        expect=409,
    )
    assert refused["type"] == "urn:parley:problem:send-key-reused"
    assert calling.texting.sent_to(PERSON) == []


# ------------------------------------------------------------------- refusals, outcomes


@pytest.mark.parametrize(
    ("purpose", "say", "kind"),
    [
        (MessagePurpose.COMPLIANCE, "You are unsubscribed.", "not-a-call-purpose"),
        (TRANSACTIONAL, " 🎉 ", "nothing-to-say"),
        (TRANSACTIONAL, "Our plans, in detail. " * 200, "call-too-long"),
    ],
)
async def test_what_cannot_be_a_call_is_refused_before_anything_is_recorded(
    calling: Calling, purpose: MessagePurpose, say: str, kind: str
) -> None:
    refused = await refusal(calling.call(say, purpose))
    assert (REFUSAL_STATUS[refused.kind], refused.kind, refused.messages) == (422, kind, [])
    assert calling.placed_to() == []
    messages = await calling.texting.api.get(
        f"/api/v1/profiles/{(await calling.texting.api.identify('voice', PERSON))['id']}/messages"
    )
    assert messages["items"] == []


async def test_a_number_twilio_cannot_call_is_recorded_as_failed_and_explained(
    calling: Calling,
) -> None:
    refused = await refusal(calling.door.call(OutboundCall(INVALID_NUMBER, "Hi!", TRANSACTIONAL)))
    assert (REFUSAL_STATUS[refused.kind], refused.kind) == (422, "undeliverable-number")
    [row] = refused.messages
    stored = await calling.message(row.id)
    assert (stored["status"], stored["error_code"]) == ("failed", 21211)


@pytest.mark.parametrize(("numbers", "reason"), [("unanswered", "no-answer"), ("busy", "busy")])
async def test_a_call_nobody_picks_up_is_undelivered_and_says_why(
    calling: Calling, numbers: str, reason: str
) -> None:
    getattr(calling.texting.twilio, numbers).add(PERSON)
    placed = await calling.call("Your demo is tomorrow.")
    await calling.texting.settle()
    stored = await calling.message(placed.message.id)
    assert stored["status"] == "undelivered"
    assert stored["error_message"].startswith(f"{reason}: ")
    assert calling.voice.heard == []


# ------------------------------------------------------------- Twilio's status callbacks


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({}, 204),
        ({"token": "someone-elses-token"}, 403),
        ({"signature": ""}, 403),
        ({"url": "https://elsewhere.example/twilio/call-status?message=1"}, 403),
    ],
    ids=["valid", "forged", "missing", "wrong-url"],
)
async def test_only_call_status_callbacks_signed_by_twilio_change_a_call(
    calling: Calling, monkeypatch: pytest.MonkeyPatch, how: dict[str, str], expected: int
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(calling.door, "status_callback_url", NOWHERE)  # only ours count
        placed = await calling.call("Your demo is tomorrow.")
        await calling.texting.settle()
    row = placed.message
    assert row.provider_sid is not None
    assert (await calling.message(row.id))["status"] == "queued"

    assert await calling.callback(row.id, "ringing", row.provider_sid, **how) == expected
    after = await calling.message(row.id)
    assert after["status"] == ("sent" if expected == 204 else "queued")


async def test_call_statuses_move_forward_only(
    calling: Calling, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patched:
        patched.setattr(calling.door, "status_callback_url", NOWHERE)
        placed = await calling.call("Your demo is tomorrow.")
        await calling.texting.settle()
    row = placed.message
    assert row.provider_sid is not None
    seen = []
    for status in ["initiated", "in-progress", "ringing", "completed", "busy", "initiated"]:
        assert await calling.callback(row.id, status, row.provider_sid) == 204
        seen.append((await calling.message(row.id))["status"])
    assert seen == ["sending", "delivered", "delivered", "delivered", "delivered", "delivered"]


async def test_a_call_status_callback_naming_a_text_changes_nothing(calling: Calling) -> None:
    sent = await calling.texting.api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "transactional"}, expect=201
    )
    await calling.texting.settle()
    [text] = sent["messages"]
    assert await calling.callback(text["id"], "busy", text["provider_sid"]) == 204
    stored = await calling.message(text["id"])
    assert (stored["status"], stored["error_message"]) == ("delivered", None)


async def test_without_a_twilio_token_there_is_no_call_door(client: TestClient) -> None:
    assert client.app is not None
    assert client.app.get(CALL_DOOR) is None
