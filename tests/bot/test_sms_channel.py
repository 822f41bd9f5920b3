"""The SMS channel, end to end through real parts: the local Twilio emulator plays the
person (signed webhooks), the channel runs in a real Sanic app registered as Rasa
registers channels, the real backend records texts, answers keywords and sends the
bot's replies back through its one door to the emulator. Only Rasa's agent is a
stand-in (it echoes), so that these tests need no trained model."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage
from sanic import Sanic
from twilio.request_validator import RequestValidator

from actions.backend_client import BackendClient, BackendUnavailable
from channels.sms import SmsInput, with_choices
from channels.twilio_webhook import FORM, MAX_BODY_BYTES
from tests.bot.conftest import PARLEY, RunningBackend, free_port, serving, wait_until_up
from tests.twilio_requests import form_body, image_only_mms, incoming_sms, twilio_signature

TOKEN = "sms-channel-test-token"
BUSINESS = "+15005550006"
SID = "AC" + "0" * 32


@dataclass
class Twilio:
    """The emulator, and the backend that sends through it."""

    url: str
    backend: RunningBackend
    webhook_port: int

    @property
    def webhook_base(self) -> str:
        """Where the channel under test is served, as Rasa's settings would say."""
        return f"http://127.0.0.1:{self.webhook_port}"


@pytest.fixture(scope="module")
def twilio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twilio]:
    emulator_port, backend_port, webhook_port = free_port(), free_port(), free_port()
    var = tmp_path_factory.mktemp("sms-var")
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{var / 'parley.db'}",
        "PARLEY_BACKEND_PORT": str(backend_port),
        "PARLEY_TWILIO_EMULATOR_PORT": str(emulator_port),
        "PARLEY_TWILIO_AUTH_TOKEN": TOKEN,
        "PARLEY_TWILIO_SMS_WEBHOOK_URL": f"http://127.0.0.1:{webhook_port}/webhooks/sms/webhook",
    }
    env.pop("PARLEY_TWILIO_API_URL", None)
    token = subprocess.run(
        [str(PARLEY), "token", "create", "--role", "service", "--name", "sms tests"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    emulator = subprocess.Popen([str(PARLEY), "twilio-emulator"], env=env)
    backend = subprocess.Popen([str(PARLEY), "backend"], env=env)
    try:
        url = f"http://127.0.0.1:{emulator_port}"
        wait_until_up(f"{url}/emulator/messages", emulator)
        wait_until_up(f"http://127.0.0.1:{backend_port}/health", backend)
        yield Twilio(
            url, RunningBackend(f"http://127.0.0.1:{backend_port}", token, env), webhook_port
        )
    finally:
        for process in (backend, emulator):
            process.terminate()
            process.wait(timeout=15)


@dataclass
class EchoAgent:
    """Stands in for Rasa's agent: answers each text through the channel's output."""

    heard: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def handle_message(self, message: UserMessage) -> None:
        self.heard.append(message.text or "")
        if self.hold is not None:
            await self.hold.wait()
        reply = self.answers.get(message.text or "", {"text": f"You said: {message.text}"})
        assert message.output_channel is not None
        await message.output_channel.send_response(message.sender_id, dict(reply))


@dataclass
class Phone:
    twilio: Twilio
    channel: SmsInput
    agent: EchoAgent
    session: aiohttp.ClientSession
    number: str

    @property
    def webhook(self) -> str:
        return f"http://127.0.0.1:{self.twilio.webhook_port}/webhooks/sms/webhook"

    async def text(self, body: str) -> dict[str, Any]:
        """The person texts the business (through the emulator's signed webhook)."""
        async with self.session.post(
            f"{self.twilio.url}/emulator/sms", json={"from": self.number, "to": BUSINESS,
                                                     "body": body},
        ) as response:  # fmt: skip
            answer: dict[str, Any] = await response.json()
        await self.channel.settled()
        return answer

    async def texts_received(self) -> list[dict[str, Any]]:
        """What the business texted this person, oldest first."""
        async with self.session.get(f"{self.twilio.url}/emulator/messages") as response:
            messages: list[dict[str, Any]] = await response.json()
        return [m for m in messages if m["to"] == self.number]

    async def bodies(self) -> list[str]:
        return [m["body"] for m in await self.texts_received()]

    async def api(self, path: str) -> Any:
        headers = {"Authorization": f"Bearer {self.twilio.backend.token}"}
        async with self.session.get(self.twilio.backend.url + path, headers=headers) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def identify(self) -> str:
        """The id of this person's profile in the backend."""
        headers = {"Authorization": f"Bearer {self.twilio.backend.token}"}
        async with self.session.post(
            self.twilio.backend.url + "/api/v1/identify",
            json={"channel": "sms", "address": self.number}, headers=headers,
        ) as response:  # fmt: skip
            return str((await response.json())["profile"]["id"])

    async def post_form(
        self, form: dict[str, str], signature: str | None, url: str | None = None
    ) -> int:
        headers = {"X-Twilio-Signature": signature} if signature is not None else {}
        async with self.session.post(url or self.webhook, data=form, headers=headers) as answer:
            await self.channel.settled()
            return answer.status


_numbers = itertools.count(2671)
_apps = itertools.count()
StartPhone = Callable[[], Awaitable[Phone]]


@asynccontextmanager
async def serving_sms(channel: SmsInput, port: int) -> AsyncIterator[EchoAgent]:
    """A Sanic app with the channel registered as Rasa registers channels."""
    app = Sanic(f"sms_test_{next(_apps)}")
    agent = EchoAgent()
    app.ctx.agent = agent
    async with serving(app, [channel], port):
        try:
            yield agent
        finally:
            await channel.settled()
            await channel.backend.close()


@pytest.fixture
async def phone(twilio: Twilio, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Phone]:
    monkeypatch.setattr(Sanic, "test_mode", True)
    backend = BackendClient(twilio.backend.url, twilio.backend.token, 10.0)
    channel = SmsInput(auth_token=TOKEN, public_url=twilio.webhook_base, backend=backend)
    async with (
        serving_sms(channel, twilio.webhook_port) as agent,
        aiohttp.ClientSession() as session,
    ):
        yield Phone(twilio, channel, agent, session, f"+1415555{next(_numbers):04d}")


def signed_form(
    phone: Phone, body: str, sid: str, token: str = TOKEN
) -> tuple[dict[str, str], str]:
    form = {"MessageSid": sid, "SmsSid": sid, "AccountSid": SID, "From": phone.number,
            "To": BUSINESS, "Body": body, "NumMedia": "0"}  # fmt: skip
    return form, RequestValidator(token).compute_signature(phone.webhook, form)


# --------------------------------------------------------------------------- the turn


async def test_a_text_reaches_the_bot_and_its_reply_comes_back_by_text(phone: Phone) -> None:
    answer = await phone.text("hello there")
    assert answer["webhook_status"] == 200
    assert answer["webhook_body"] == '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    assert phone.agent.heard == ["hello there"]
    [reply] = await phone.texts_received()
    assert reply["body"] == "You said: hello there" and reply["from"] == BUSINESS

    # The backend holds both, the reply marked as an answer to the text.
    profile = await phone.identify()
    page = await phone.api(f"/api/v1/profiles/{profile}/messages")
    inbound, outbound = page["items"][1], page["items"][0]
    assert (inbound["direction"], inbound["body"]) == ("inbound", "hello there")
    assert (outbound["purpose"], outbound["in_reply_to"]) == ("conversational", inbound["id"])


async def test_twilio_is_answered_before_the_bot_has_finished(phone: Phone) -> None:
    phone.agent.hold = asyncio.Event()
    async with phone.session.post(
        f"{phone.twilio.url}/emulator/sms",
        json={"from": phone.number, "to": BUSINESS, "body": "slow one"},
    ) as response:
        answer = await response.json()
    # The webhook was answered while the bot was still thinking.
    assert answer["webhook_status"] == 200
    assert await phone.bodies() == []
    phone.agent.hold.set()
    await phone.channel.settled()
    assert await phone.bodies() == ["You said: slow one"]


async def test_a_persons_texts_reach_the_bot_in_the_order_sent(phone: Phone) -> None:
    phone.agent.hold = asyncio.Event()
    for body in ("one", "two", "three"):
        form, signature = signed_form(phone, body, "SM" + os.urandom(16).hex())
        headers = {"X-Twilio-Signature": signature}
        async with phone.session.post(phone.webhook, data=form, headers=headers) as answer:
            assert answer.status == 200
    phone.agent.hold.set()
    await phone.channel.settled()
    assert phone.agent.heard == ["one", "two", "three"]
    assert await phone.bodies() == ["You said: one", "You said: two", "You said: three"]


async def test_buttons_become_words_to_reply_with_and_images_go_as_mms(phone: Phone) -> None:
    phone.agent.answers["menu"] = {
        "text": "What would you like to do?",
        "buttons": [{"title": "See prices", "payload": "/list_products"},
                    {"title": "Book a demo", "payload": "/book_demo"},
                    {"title": "Talk to a person", "payload": "/human_handoff"}],
        "image": "https://brightdesk.example/inbox.png",
    }  # fmt: skip
    await phone.text("menu")
    question, picture = await phone.texts_received()
    assert question["body"] == (
        "What would you like to do?\nReply: See prices, Book a demo or Talk to a person"
    )
    assert picture["media_urls"] == ["https://brightdesk.example/inbox.png"]


def test_one_choice_reads_plainly() -> None:
    assert with_choices("Ready?", [{"title": "Yes", "payload": "/affirm"}]) == "Ready?\nReply: Yes"
    assert with_choices("Plain.", []) == "Plain."


# ------------------------------------------------------------------------ keywords


async def test_stop_is_answered_by_the_backend_and_never_reaches_the_bot(phone: Phone) -> None:
    await phone.text("hi")
    await phone.text("  Stop! ")
    assert phone.agent.heard == ["hi"]
    bodies = await phone.bodies()
    assert bodies[0] == "You said: hi"
    assert len(bodies) == 2 and "unsubscribed" in bodies[1]

    # After STOP the bot's own replies are refused at the door: nothing more is sent.
    await phone.text("are you still there?")
    assert phone.agent.heard == ["hi", "are you still there?"]
    assert len(await phone.bodies()) == 2

    await phone.text("START")
    await phone.text("hello again")
    assert (await phone.bodies())[2:] == [
        "Brightdesk: you are subscribed to our texts. Msg & data rates may apply. "
        "Reply HELP for help, STOP to opt out.",
        "You said: hello again",
    ]


# ---------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("case", "expected"),
    [("valid", 200), ("forged", 403), ("missing", 403), ("wrong-url", 403)],
)
async def test_only_texts_signed_by_twilio_for_this_url_reach_the_bot(
    phone: Phone, case: str, expected: int
) -> None:
    sid = "SM" + os.urandom(16).hex()
    form, signature = signed_form(phone, "let me in", sid)
    if case == "forged":
        signature = signed_form(phone, "let me in", sid, token="not-the-token")[1]
    elif case == "wrong-url":
        signature = RequestValidator(TOKEN).compute_signature(
            "https://elsewhere.example/webhooks/sms/webhook", form
        )
    status = await phone.post_form(form, None if case == "missing" else signature)
    assert status == expected
    if expected == 200:
        assert phone.agent.heard == ["let me in"]
        assert await phone.bodies() == ["You said: let me in"]
    else:
        assert phone.agent.heard == []
        assert await phone.bodies() == []


async def test_a_replayed_delivery_is_processed_once(phone: Phone) -> None:
    form, signature = signed_form(phone, "just once", "SM" + os.urandom(16).hex())
    assert await phone.post_form(form, signature) == 200
    assert await phone.post_form(form, signature) == 200
    assert phone.agent.heard == ["just once"]
    assert await phone.bodies() == ["You said: just once"]


async def test_another_replica_that_sees_the_same_delivery_drops_it(
    phone: Phone, twilio: Twilio
) -> None:
    form, signature = signed_form(phone, "replicated", "SM" + os.urandom(16).hex())
    assert await phone.post_form(form, signature) == 200
    phone.channel._seen.clear()  # as if a second Rasa replica received the retry
    assert await phone.post_form(form, signature) == 200
    assert phone.agent.heard == ["replicated"]


async def test_a_signed_request_without_a_sender_is_refused_clearly(phone: Phone) -> None:
    form = {"MessageSid": "SM" + "1" * 32, "Body": "hi"}
    signature = RequestValidator(TOKEN).compute_signature(phone.webhook, form)
    assert await phone.post_form(form, signature) == 400
    assert phone.agent.heard == []


async def test_the_public_url_setting_is_what_signatures_cover(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy Twilio signs the public URL, not the one Rasa sees."""
    monkeypatch.setattr(Sanic, "test_mode", True)
    public = "https://chat.brightdesk.example"
    backend = BackendClient(twilio.backend.url, twilio.backend.token, 10.0)
    channel = SmsInput(auth_token=TOKEN, public_url=public, backend=backend)
    port = free_port()
    form = {"MessageSid": "SM" + "2" * 32, "From": "+14155550100", "To": BUSINESS, "Body": "x"}
    local = f"http://127.0.0.1:{port}/webhooks/sms/webhook"
    async with serving_sms(channel, port) as agent, aiohttp.ClientSession() as session:
        for signed_for, expected in ((local, 403), (public + "/webhooks/sms/webhook", 200)):
            signature = RequestValidator(TOKEN).compute_signature(signed_for, form)
            async with session.post(
                local, data=form, headers={"X-Twilio-Signature": signature}
            ) as answer:
                assert answer.status == expected
        await channel.settled()
        assert agent.heard == ["x"]


class AnswerLostOnce(BackendClient):
    """The backend records the first hand-over, but its answer never arrives."""

    lost = False

    async def receive_text(self, *args: Any, **kwargs: Any) -> Any:
        receipt = await super().receive_text(*args, **kwargs)
        if not self.lost:
            self.lost = True
            raise BackendUnavailable("POST /api/v1/inbound-texts: TimeoutError")
        return receipt


async def test_a_text_whose_receipt_was_lost_still_reaches_the_bot_once(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sanic, "test_mode", True)
    monkeypatch.setattr("channels.sms.RETRY_DELAYS", (0.01,))
    backend = AnswerLostOnce(twilio.backend.url, twilio.backend.token, 10.0)
    channel = SmsInput(auth_token=TOKEN, public_url=twilio.webhook_base, backend=backend)
    async with (
        serving_sms(channel, twilio.webhook_port) as agent,
        aiohttp.ClientSession() as session,
    ):
        phone = Phone(twilio, channel, agent, session, "+14155550199")
        await phone.text("are you there?")
        assert agent.heard == ["are you there?"]
        assert await phone.bodies() == ["You said: are you there?"]


# ----------------------------------------- requests as Twilio documents them, and forgeries


async def post_raw(
    phone: Phone, body: bytes, signature: str, content_type: str = FORM, host: str | None = None
) -> int:
    headers = {"X-Twilio-Signature": signature, "Content-Type": content_type}
    if host:
        headers["Host"] = host
    async with phone.session.post(phone.webhook, data=body, headers=headers) as answer:
        await phone.channel.settled()
        return answer.status


async def test_a_text_as_twilio_documents_it_blank_fields_and_all_reaches_the_bot(
    phone: Phone,
) -> None:
    params = incoming_sms("SM" + os.urandom(16).hex(), phone.number, "hi from a real phone")
    assert ("FromCity", "") in params
    signature = twilio_signature(TOKEN, phone.webhook, params)
    assert await post_raw(phone, form_body(params), signature) == 200
    assert phone.agent.heard == ["hi from a real phone"]


async def test_a_picture_without_words_is_recorded_with_its_media(phone: Phone) -> None:
    params = image_only_mms("MM" + os.urandom(16).hex(), phone.number)
    signature = twilio_signature(TOKEN, phone.webhook, params)
    assert await post_raw(phone, form_body(params), signature) == 200
    profile = await phone.identify()
    [received] = (await phone.api(f"/api/v1/profiles/{profile}/messages"))["items"][-1:]
    assert received["direction"] == "inbound" and received["body"] == ""
    assert received["media_urls"] == [dict(params)["MediaUrl0"]]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/json", "text/plain"]
)
async def test_a_body_the_signature_did_not_cover_is_refused(
    phone: Phone, content_type: str
) -> None:
    """The forgery: a valid signature over the bare URL, and From and Body in a body
    of another type, which the signature check would not have read."""
    body = "".join(
        f'--x\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("MessageSid", "SM" + "3" * 32), ("From", phone.number),
                            ("To", BUSINESS), ("Body", "STOP"))
    ).encode() + b"--x--\r\n"  # fmt: skip
    signature = twilio_signature(TOKEN, phone.webhook, [])
    assert await post_raw(phone, body, signature, content_type) == 415
    assert phone.agent.heard == []
    profile = await phone.identify()
    assert (await phone.api(f"/api/v1/profiles/{profile}/messages"))["items"] == []


async def test_a_text_signed_for_the_host_it_claims_is_refused(phone: Phone) -> None:
    params = incoming_sms("SM" + os.urandom(16).hex(), phone.number, "STOP")
    forged_url = "http://attacker.example/webhooks/sms/webhook"
    signature = twilio_signature(TOKEN, forged_url, params)
    assert await post_raw(phone, form_body(params), signature, host="attacker.example") == 403
    assert phone.agent.heard == []


async def test_an_oversized_signed_text_is_refused_not_acknowledged(phone: Phone) -> None:
    params = [*incoming_sms("SM" + os.urandom(16).hex(), phone.number, "x" * MAX_BODY_BYTES)]
    signature = twilio_signature(TOKEN, phone.webhook, params)
    assert await post_raw(phone, form_body(params), signature) == 413
    assert phone.agent.heard == []
