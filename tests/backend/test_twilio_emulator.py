"""The local Twilio, driven by the real `twilio` library as Parley drives Twilio."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from backend.twilio_api import twilio_client
from backend.twilio_emulator import TwilioEmulator

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
        form = {k: str(v) for k, v in (await request.post()).items()}
        valid = RequestValidator(TOKEN).validate(
            self.url, form, request.headers.get("X-Twilio-Signature", "")
        )
        self.calls.append(form)
        self.signed.append(bool(valid))
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
