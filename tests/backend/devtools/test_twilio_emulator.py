"""The local Twilio, driven by the real `twilio` library as Parley drives Twilio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException

from backend.devtools.twilio_emulator import TwilioEmulator
from backend.messaging.twilio_api import twilio_client
from tests.twilio_requests import image_only_mms, incoming_call, incoming_sms, twilio_signature

SID = "AC" + "0" * 32
TOKEN = "emulator-auth-token"
BUSINESS = "+15557654321"
PERSON = "+14155552671"

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]


@dataclass
class Receiver:
    """A webhook endpoint that keeps what it was sent and whether it was signed right."""

    url: str = ""
    calls: list[dict[str, str]] = field(default_factory=list)
    signed: list[bool] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        # Read as Twilio's documentation describes it, not as the emulator writes it.
        pairs = parse_qsl((await request.read()).decode(), keep_blank_values=True)
        signature = request.headers.get("X-Twilio-Signature", "")
        self.calls.append(dict(pairs))
        self.signed.append(signature == twilio_signature(TOKEN, self.url, pairs))
        return web.Response(text="<Response/>", content_type="text/xml")


@pytest.fixture
async def receiver(aiohttp_server: ServerFactory) -> Receiver:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = await aiohttp_server(app)
    receiver.url = str(server.make_url("/hook"))
    return receiver


@pytest.fixture
async def emulator(
    aiohttp_server: ServerFactory, receiver: Receiver
) -> AsyncIterator[tuple[TwilioEmulator, str]]:
    twilio = TwilioEmulator(SID, TOKEN, sms_webhook_url=receiver.url)
    server = await aiohttp_server(twilio.app())
    yield twilio, str(server.make_url("/")).rstrip("/")


async def send(url: str, token: str = TOKEN, **fields: Any) -> Any:
    client = twilio_client(SID, token, api_url=url)
    try:
        return await client.messages.create_async(**fields)
    finally:
        await client.http_client.close()


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


async def test_a_message_sent_with_the_twilio_library_is_recorded_and_reported_signed(
    emulator: tuple[TwilioEmulator, str], receiver: Receiver
) -> None:
    _, url = emulator
    message = await send(
        url, to=PERSON, from_=BUSINESS, body="Hello from Parley", status_callback=receiver.url
    )
    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert (message.to, message.from_, message.body, message.status) == (
        PERSON, BUSINESS, "Hello from Parley", "queued",
    )  # fmt: skip

    await wait_for(lambda: len(receiver.calls) == 2)
    assert [c["MessageStatus"] for c in receiver.calls] == ["sent", "delivered"]
    assert receiver.signed == [True, True]
    assert {c["MessageSid"] for c in receiver.calls} == {message.sid}

    client = twilio_client(SID, TOKEN, api_url=url)
    try:
        fetched = await client.messages(message.sid).fetch_async()
        listed = await client.messages.list_async(to=PERSON)
    finally:
        await client.http_client.close()
    assert fetched.status == "delivered"
    assert [m.sid for m in listed] == [message.sid]


async def test_without_status_callbacks_a_message_is_delivered_and_nobody_is_called(
    aiohttp_server: ServerFactory, receiver: Receiver
) -> None:
    twilio = TwilioEmulator(SID, TOKEN, status_callbacks=False)
    url = str((await aiohttp_server(twilio.app())).make_url("/")).rstrip("/")
    message = await send(url, to=PERSON, from_=BUSINESS, body="hi", status_callback=receiver.url)
    await twilio.settled()
    assert twilio.messages[message.sid].statuses[-2:] == ["sent", "delivered"]
    assert receiver.calls == []


async def test_an_undeliverable_number_reports_the_failure_with_its_error_code(
    emulator: tuple[TwilioEmulator, str], receiver: Receiver
) -> None:
    twilio, url = emulator
    twilio.undeliverable.add(PERSON)
    await send(url, to=PERSON, from_=BUSINESS, body="hi", status_callback=receiver.url)
    await wait_for(lambda: len(receiver.calls) == 2)
    assert receiver.calls[-1]["MessageStatus"] == "undelivered"
    assert receiver.calls[-1]["ErrorCode"] == "30003"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": "+15005550001", "from_": BUSINESS, "body": "x"}, 21211),
        ({"to": "not a number", "from_": BUSINESS, "body": "x"}, 21211),
        ({"to": PERSON, "from_": "nope", "body": "x"}, 21212),
        ({"to": PERSON, "from_": BUSINESS, "body": ""}, 21602),
        ({"to": PERSON, "from_": BUSINESS, "body": "x" * 1601}, 21617),
        ({"to": "+15005550004", "from_": BUSINESS, "body": "x"}, 21610),
    ],
)
async def test_bad_requests_get_twilios_errors(
    emulator: tuple[TwilioEmulator, str], fields: dict[str, str], code: int
) -> None:
    twilio, url = emulator
    with pytest.raises(TwilioRestException) as raised:
        await send(url, **fields)
    assert (raised.value.status, raised.value.code) == (400, code)
    assert twilio.messages == {}


async def test_a_wrong_auth_token_is_refused(emulator: tuple[TwilioEmulator, str]) -> None:
    twilio, url = emulator
    with pytest.raises(TwilioRestException) as raised:
        await send(url, token="wrong", to=PERSON, from_=BUSINESS, body="x")
    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert twilio.messages == {}


async def test_a_person_texting_fires_a_signed_inbound_webhook(
    emulator: tuple[TwilioEmulator, str], receiver: Receiver
) -> None:
    _, url = emulator
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/emulator/sms", json={"from": PERSON, "to": BUSINESS, "body": "hi there"}
        ) as response,
    ):
        answer = await response.json()
    assert answer["webhook_status"] == 200
    [call] = receiver.calls
    assert (call["From"], call["To"], call["Body"]) == (PERSON, BUSINESS, "hi there")
    assert call["MessageSid"] == answer["sid"]
    assert receiver.signed == [True]
    # Every parameter Twilio documents for an incoming text, its blank ones included.
    assert set(call) == {name for name, _ in incoming_sms("SM1", PERSON, "hi there")}
    assert call["ToCity"] == "" and call["NumMedia"] == "0"


async def test_a_picture_without_words_is_posted_as_twilio_posts_an_mms(
    emulator: tuple[TwilioEmulator, str], receiver: Receiver
) -> None:
    _, url = emulator
    picture = "https://example.com/cat.jpg"
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/emulator/sms", json={"from": PERSON, "to": BUSINESS, "media_urls": [picture]}
        ) as response,
    ):
        answer = await response.json()
    assert answer["webhook_status"] == 200 and answer["sid"].startswith("MM")
    [call] = receiver.calls
    assert set(call) == {name for name, _ in image_only_mms("MM1", PERSON)}
    assert (call["Body"], call["NumMedia"], call["MediaUrl0"]) == ("", "1", picture)
    assert call["MediaContentType0"] == "image/jpeg"
    assert receiver.signed == [True]


# ------------------------------------------------------------------- calls (TwiML)

MENU = (
    '<Response><Gather input="speech dtmf" numDigits="1" '
    'action="/voice/gather?buttons=%5B%22Pricing%22%5D&amp;prompt=Hi!%20What\'s%20up%3F">'
    '<Say>Hi! Press 1 for Pricing, or just say it.</Say><Pause length="1" /></Gather>'
    '<Redirect method="POST">{base}/voice/gather?silence=1</Redirect></Response>'
)


@dataclass
class VoiceApp:
    """A voice webhook speaking TwiML, checking each request's signature over the URL
    exactly as requested (query included)."""

    base: str = ""
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    signed: list[bool] = field(default_factory=list)
    refuse: bool = False

    async def handle(self, request: web.Request) -> web.Response:
        pairs = parse_qsl((await request.read()).decode(), keep_blank_values=True)
        form = dict(pairs)
        url = f"{self.base}{request.raw_path}"
        signature = request.headers.get("X-Twilio-Signature", "")
        self.requests.append((url, form))
        self.signed.append(signature == twilio_signature(TOKEN, url, pairs))
        if self.refuse:
            return web.Response(status=403)
        return web.Response(text=self.twiml(request, form), content_type="text/xml")

    def twiml(self, request: web.Request, form: dict[str, str]) -> str:
        if request.path == "/voice/call":
            return MENU.format(base=self.base)
        if form.get("SpeechResult") == "bye":
            return "<Response><Say>Goodbye!</Say><Hangup /></Response>"
        if "Digits" in form or "SpeechResult" in form:
            heard = form.get("Digits") or form.get("SpeechResult")
            return f"<Response><Say>You chose {heard}.</Say>{MENU.format(base=self.base)[10:]}"
        if request.query.get("silence") == "1":
            return (
                '<Response><Gather input="speech dtmf" action="/voice/gather">'
                "<Say>Sorry, I didn't catch that.</Say></Gather>"
                f'<Redirect method="POST">{self.base}/voice/gather?silence=2</Redirect></Response>'
            )
        return "<Response><Say>I still can't hear you. Goodbye!</Say><Hangup /></Response>"


@pytest.fixture
async def voice_app(aiohttp_server: ServerFactory) -> VoiceApp:
    voice = VoiceApp()
    app = web.Application()
    app.router.add_post("/voice/call", voice.handle)
    app.router.add_post("/voice/gather", voice.handle)
    server = await aiohttp_server(app)
    voice.base = str(server.make_url("/")).rstrip("/")
    return voice


@pytest.fixture
async def phone(aiohttp_server: ServerFactory, voice_app: VoiceApp) -> str:
    twilio = TwilioEmulator(SID, TOKEN, voice_webhook_url=f"{voice_app.base}/voice/call")
    server = await aiohttp_server(twilio.app())
    return str(server.make_url("/")).rstrip("/")


async def post_json(url: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, await response.json()


async def test_a_call_plays_its_twiml_round_trip_signed_at_every_step(
    phone: str, voice_app: VoiceApp
) -> None:
    status, call = await post_json(f"{phone}/emulator/call", {"from": PERSON, "to": BUSINESS})
    assert status == 200
    sid = call["sid"]
    assert sid.startswith("CA") and len(sid) == 34
    assert (call["webhook_status"], call["hung_up"], call["status"]) == (200, False, "in-progress")
    assert call["said"] == ["Hi! Press 1 for Pricing, or just say it."]
    assert call["twiml"] == MENU.format(base=voice_app.base)
    assert call["listening"]["input"] == "speech dtmf"
    [(url, first)] = voice_app.requests
    assert url == f"{voice_app.base}/voice/call"
    assert {k: first[k] for k in ("CallSid", "AccountSid", "From", "To", "Caller", "Called",
                                  "CallStatus", "Direction", "ApiVersion")} == {
        "CallSid": sid, "AccountSid": SID, "From": PERSON, "To": BUSINESS, "Caller": PERSON,
        "Called": BUSINESS, "CallStatus": "ringing", "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }  # fmt: skip
    # Every parameter Twilio documents for a call coming in, its blank ones included.
    assert set(first) == {name for name, _ in incoming_call(sid, PERSON)}
    assert first["CallerZip"] == "" and first["CallToken"] == ""

    status, pressed = await post_json(f"{phone}/emulator/call/{sid}/gather", {"digits": "1"})
    assert status == 200
    assert pressed["said"] == ["You chose 1.", "Hi! Press 1 for Pricing, or just say it."]
    url, form = voice_app.requests[-1]
    # The relative action URL is resolved against the URL that served the TwiML.
    assert (
        url
        == f"{voice_app.base}/voice/gather?buttons=%5B%22Pricing%22%5D&prompt=Hi!%20What's%20up%3F"
    )
    assert (form["Digits"], form["CallStatus"], form["CallSid"]) == ("1", "in-progress", sid)

    _, spoken = await post_json(f"{phone}/emulator/call/{sid}/gather", {"speech": "bye"})
    assert (spoken["said"], spoken["hung_up"], spoken["status"]) == (
        ["Goodbye!"], True, "completed",
    )  # fmt: skip
    assert voice_app.requests[-1][1]["SpeechResult"] == "bye"
    assert voice_app.requests[-1][1]["Confidence"]
    assert voice_app.signed == [True, True, True]

    status, ended = await post_json(f"{phone}/emulator/call/{sid}/gather", {"speech": "hello?"})
    assert (status, ended) == (409, {"error": "the call is completed"})

    async with aiohttp.ClientSession() as session, session.get(f"{phone}/emulator/calls") as r:
        [listed] = await r.json()
    assert listed["transcript"] == [
        {"speaker": "bot", "input": "speech", "text": "Hi! Press 1 for Pricing, or just say it."},
        {"speaker": "caller", "input": "digits", "text": "1"},
        {"speaker": "bot", "input": "speech", "text": "You chose 1."},
        {"speaker": "bot", "input": "speech", "text": "Hi! Press 1 for Pricing, or just say it."},
        {"speaker": "caller", "input": "speech", "text": "bye"},
        {"speaker": "bot", "input": "speech", "text": "Goodbye!"},
    ]


async def test_silence_runs_what_follows_the_gather_and_a_second_silence_hangs_up(
    phone: str, voice_app: VoiceApp
) -> None:
    _, call = await post_json(f"{phone}/emulator/call", {"from": PERSON, "to": BUSINESS})
    gather = f"{phone}/emulator/call/{call['sid']}/gather"

    _, first = await post_json(gather, {})
    assert (first["said"], first["hung_up"]) == (["Sorry, I didn't catch that."], False)
    assert voice_app.requests[-1][0] == f"{voice_app.base}/voice/gather?silence=1"
    assert "SpeechResult" not in voice_app.requests[-1][1]

    _, second = await post_json(gather, {})
    assert (second["said"], second["hung_up"]) == (["I still can't hear you. Goodbye!"], True)
    assert voice_app.signed == [True, True, True]


async def test_a_refused_webhook_fails_the_call(phone: str, voice_app: VoiceApp) -> None:
    voice_app.refuse = True
    _, call = await post_json(f"{phone}/emulator/call", {"from": PERSON, "to": BUSINESS})
    assert (call["webhook_status"], call["hung_up"], call["status"]) == (403, True, "failed")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/emulator/call", {"from": PERSON}, 400),
        ("/emulator/call", {"from": PERSON, "to": "nope"}, 400),
        ("/emulator/call/CA0/gather", {}, 404),
    ],
)
async def test_bad_call_requests_are_refused(
    phone: str, path: str, body: dict[str, str], status: int
) -> None:
    assert (await post_json(f"{phone}{path}", body))[0] == status


async def test_a_gather_with_both_speech_and_digits_is_refused(phone: str) -> None:
    _, call = await post_json(f"{phone}/emulator/call", {"from": PERSON, "to": BUSINESS})
    status, _ = await post_json(
        f"{phone}/emulator/call/{call['sid']}/gather", {"speech": "one", "digits": "1"}
    )
    assert status == 400


async def test_a_call_without_a_voice_webhook_url_is_refused(
    emulator: tuple[TwilioEmulator, str],
) -> None:
    _, url = emulator
    status, answer = await post_json(f"{url}/emulator/call", {"from": PERSON, "to": BUSINESS})
    assert (status, answer) == (409, {"error": "no voice webhook URL is configured"})


# ------------------------------------------------------------- calls placed (Calls API)

LISTENING = (
    "<Response><Say>Hi Ada, your demo is tomorrow. Shall I text you the link?</Say>"
    '<Gather input="speech dtmf" action="{base}/voice/gather?prompt=Shall%20I" />'
    '<Redirect method="POST">{base}/voice/gather?silence=1</Redirect></Response>'
)
EVERY_EVENT = ["initiated", "ringing", "answered", "completed"]


@pytest.fixture
async def calling(
    aiohttp_server: ServerFactory, voice_app: VoiceApp
) -> AsyncIterator[tuple[TwilioEmulator, str]]:
    twilio = TwilioEmulator(SID, TOKEN, voice_webhook_url=f"{voice_app.base}/voice/call")
    server = await aiohttp_server(twilio.app())
    yield twilio, str(server.make_url("/")).rstrip("/")


async def place(api: str, token: str = TOKEN, **fields: Any) -> Any:
    client = twilio_client(SID, token, api_url=api)
    try:
        return await client.calls.create_async(**fields)
    finally:
        await client.http_client.close()


async def emulated_calls(url: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/emulator/calls") as r:
        listed: list[dict[str, Any]] = await r.json()
    return listed


async def test_a_placed_call_rings_speaks_its_twiml_and_reports_each_step_signed(
    calling: tuple[TwilioEmulator, str], voice_app: VoiceApp, receiver: Receiver
) -> None:
    twilio, url = calling
    call = await place(
        url, to=PERSON, from_=BUSINESS, twiml=LISTENING.format(base=voice_app.base),
        status_callback=receiver.url, status_callback_event=EVERY_EVENT,
    )  # fmt: skip
    assert call.sid.startswith("CA") and len(call.sid) == 34
    assert (call.to, call._from, call.status, call.direction) == (
        PERSON, BUSINESS, "queued", "outbound-api",
    )  # fmt: skip

    await twilio.settled()
    assert [c["CallStatus"] for c in receiver.calls] == ["initiated", "ringing", "in-progress"]
    assert receiver.signed == [True, True, True]
    first = receiver.calls[0]
    assert (first["CallSid"], first["Direction"], first["From"], first["To"]) == (
        call.sid, "outbound-api", BUSINESS, PERSON,
    )  # fmt: skip
    assert [c["SequenceNumber"] for c in receiver.calls] == ["0", "1", "2"]
    [listed] = await emulated_calls(url)
    assert listed["transcript"] == [
        {"speaker": "bot", "input": "speech",
         "text": "Hi Ada, your demo is tomorrow. Shall I text you the link?"},
    ]  # fmt: skip
    assert (listed["direction"], listed["status"]) == ("outbound-api", "in-progress")

    # The person answers the <Gather>: its action hears them, as on a call coming in.
    status, answered = await post_json(f"{url}/emulator/call/{call.sid}/gather", {"speech": "bye"})
    assert (status, answered["said"], answered["hung_up"]) == (200, ["Goodbye!"], True)
    [(action, form)] = voice_app.requests
    assert action == f"{voice_app.base}/voice/gather?prompt=Shall%20I"
    assert (form["Direction"], form["From"], form["To"], form["SpeechResult"]) == (
        "outbound-api", BUSINESS, PERSON, "bye",
    )  # fmt: skip
    assert voice_app.signed == [True]
    completed = receiver.calls[-1]
    assert (completed["CallStatus"], completed["CallDuration"]) == ("completed", "0")
    assert receiver.signed[-1]

    client = twilio_client(SID, TOKEN, api_url=url)
    try:
        fetched = await client.calls(call.sid).fetch_async()
        listed_to = await client.calls.list_async(to=PERSON, from_=BUSINESS)
        listed_other = await client.calls.list_async(to=BUSINESS)
    finally:
        await client.http_client.close()
    assert (fetched.status, fetched.direction, fetched.duration) == (
        "completed", "outbound-api", "0",
    )  # fmt: skip
    assert [c.sid for c in listed_to] == [call.sid]
    assert listed_to[0].date_created is not None
    assert listed_other == []


async def test_silence_on_a_placed_call_follows_the_redirect_with_the_callers_params(
    calling: tuple[TwilioEmulator, str], voice_app: VoiceApp
) -> None:
    twilio, url = calling
    call = await place(url, to=PERSON, from_=BUSINESS, twiml=LISTENING.format(base=voice_app.base))
    await twilio.settled()
    _, silent = await post_json(f"{url}/emulator/call/{call.sid}/gather", {})
    assert silent["said"] == ["Sorry, I didn't catch that."]
    [(redirect, form)] = voice_app.requests
    assert redirect == f"{voice_app.base}/voice/gather?silence=1"
    assert (form["Direction"], form["To"]) == ("outbound-api", PERSON)


@pytest.mark.parametrize(("numbers", "status"), [("unanswered", "no-answer"), ("busy", "busy")])
async def test_a_number_that_does_not_pick_up_reports_why_and_hears_nothing(
    calling: tuple[TwilioEmulator, str], voice_app: VoiceApp, receiver: Receiver,
    numbers: str, status: str,
) -> None:  # fmt: skip
    twilio, url = calling
    getattr(twilio, numbers).add(PERSON)
    call = await place(
        url, to=PERSON, from_=BUSINESS, twiml=LISTENING.format(base=voice_app.base),
        status_callback=receiver.url, status_callback_event=EVERY_EVENT,
    )  # fmt: skip
    await twilio.settled()
    assert [c["CallStatus"] for c in receiver.calls] == ["initiated", "ringing", status]
    assert "CallDuration" not in receiver.calls[-1]
    [listed] = await emulated_calls(url)
    assert (listed["status"], listed["transcript"]) == (status, [])
    assert voice_app.requests == []
    gather = await post_json(f"{url}/emulator/call/{call.sid}/gather", {"speech": "hello?"})
    assert gather == (409, {"error": f"the call is {status}"})


async def test_without_events_asked_for_only_the_end_of_the_call_is_reported(
    calling: tuple[TwilioEmulator, str], receiver: Receiver
) -> None:
    twilio, url = calling
    await place(
        url, to=PERSON, from_=BUSINESS, status_callback=receiver.url,
        twiml="<Response><Say>Your demo starts in an hour.</Say></Response>",
    )  # fmt: skip
    await twilio.settled()
    assert [c["CallStatus"] for c in receiver.calls] == ["completed"]
    [listed] = await emulated_calls(url)
    assert listed["statuses"] == ["queued", "initiated", "ringing", "in-progress", "completed"]


async def test_a_call_placed_with_a_url_fetches_its_twiml_there_signed(
    calling: tuple[TwilioEmulator, str], voice_app: VoiceApp
) -> None:
    twilio, url = calling
    call = await place(url, to=PERSON, from_=BUSINESS, url=f"{voice_app.base}/voice/call")
    await twilio.settled()
    [(fetched, form)] = voice_app.requests
    assert fetched == f"{voice_app.base}/voice/call"
    assert (form["CallSid"], form["Direction"], form["CallStatus"]) == (
        call.sid, "outbound-api", "in-progress",
    )  # fmt: skip
    assert voice_app.signed == [True]
    [listed] = await emulated_calls(url)
    assert listed["transcript"][0]["text"] == "Hi! Press 1 for Pricing, or just say it."


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": "+15005550001", "from_": BUSINESS, "twiml": "<Response/>"}, 21211),
        ({"to": "not a number", "from_": BUSINESS, "twiml": "<Response/>"}, 21211),
        ({"to": PERSON, "from_": "nope", "twiml": "<Response/>"}, 21212),
        ({"to": PERSON, "from_": BUSINESS}, 21205),
    ],
)
async def test_bad_calls_get_twilios_errors(
    calling: tuple[TwilioEmulator, str], fields: dict[str, str], code: int
) -> None:
    twilio, url = calling
    with pytest.raises(TwilioRestException) as raised:
        await place(url, **fields)
    assert (raised.value.status, raised.value.code) == (400, code)
    assert twilio.calls == {}


async def test_placing_a_call_with_a_wrong_auth_token_is_refused(
    calling: tuple[TwilioEmulator, str],
) -> None:
    twilio, url = calling
    with pytest.raises(TwilioRestException) as raised:
        await place(url, token="wrong", to=PERSON, from_=BUSINESS, twiml="<Response/>")
    assert (raised.value.status, raised.value.code) == (401, 20003)
    assert twilio.calls == {}


@pytest.mark.parametrize("path", ["/emulator/sms", "/emulator/call"])
async def test_hostile_json_gets_the_emulators_400_not_a_500(
    emulator: tuple[TwilioEmulator, str], path: str
) -> None:
    _, url = emulator
    deep = b"[" * 100_000 + b"]" * 100_000
    async with aiohttp.ClientSession() as session, session.post(
        f"{url}{path}", data=deep, headers={"Content-Type": "application/json"}
    ) as response:  # fmt: skip
        assert response.status == 400
