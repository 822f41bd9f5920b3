"""The SMS channel, end to end through real parts: the local Twilio emulator plays the
person (signed webhooks, and Twilio's fallback to the backend when the webhook fails),
the channel runs in a real Sanic app registered as Rasa registers channels, the real
backend records each text before Twilio is answered, applies keywords, and has the bot
answer every text once through the channel's turn endpoint; the bot's replies go back
through the backend's one door to the emulator. Only Rasa's model is a stand-in: an
agent with Rasa's own lock and tracker stores whose processor echoes, replying during
the turn and saving the conversation at its end as Rasa's does, so that these tests
need no trained model."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage
from rasa.core.lock_store import InMemoryLockStore
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import BotUttered, UserUttered
from sanic import Sanic

from bot.backend_client import BackendClient
from channels.sms import SmsInput, in_conversation, with_choices
from channels.twilio_webhook import FORM, MAX_BODY_BYTES
from tests.bot.conftest import PARLEY, RunningBackend, serving, wait_until_up
from tests.servers import free_port
from tests.twilio_requests import form_body, image_only_mms, incoming_sms, twilio_signature

TOKEN = "sms-channel-test-token"
RASA_TOKEN = "sms-channel-test-rasa-token"
BUSINESS = "+15005550006"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


@dataclass
class Twilio:
    """The emulator, and the backend that records texts, sends through it and asks the
    channel (served on `webhook_port`) for the bot's turns."""

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
        "PARLEY_TWILIO_SMS_FALLBACK_URL": f"http://127.0.0.1:{backend_port}/twilio/sms",
        # The backend asks the channel for the bot's turns, as it asks Rasa.
        "PARLEY_RASA_API_URL": f"http://127.0.0.1:{webhook_port}",
        "PARLEY_RASA_TOKEN": RASA_TOKEN,
        "PARLEY_SMS_TURN_LEASE_SECONDS": "10",
        "PARLEY_SCHEDULER_ENABLED": "false",
    }
    env.pop("PARLEY_TWILIO_API_URL", None)
    env.pop("PARLEY_PUBLIC_URL", None)
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
class StandInAgent:
    """Rasa's agent with Rasa's own lock store and tracker store; its processor echoes
    each text as Rasa's would: replies sent during the turn, events saved at its end."""

    lock_store: InMemoryLockStore = field(default_factory=InMemoryLockStore)
    tracker_store: InMemoryTrackerStore = field(
        default_factory=lambda: InMemoryTrackerStore(Domain.empty())
    )
    heard: list[tuple[str, str]] = field(default_factory=list)  # (sender, text)
    hold: asyncio.Event | None = None
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Runs before the reply is sent (what an action would do for that text).
    actions: dict[str, Callable[[UserMessage], Awaitable[None]]] = field(default_factory=dict)
    # The process dies after the turn's replies were sent, before its events were saved.
    crashes_after_replying: int = 0

    @property
    def processor(self) -> StandInAgent:
        return self

    def is_ready(self) -> bool:
        return True

    async def handle_message(self, message: UserMessage) -> None:
        text, sender = message.text or "", message.sender_id
        self.heard.append((sender, text))
        if self.hold is not None:
            await self.hold.wait()
        tracker = await self.tracker_store.get_or_create_tracker(sender)
        tracker.update(UserUttered(text, message_id=message.message_id,
                                   metadata=message.metadata))  # fmt: skip
        if text in self.actions:
            await self.actions[text](message)
        reply = dict(self.answers.get(text, {"text": f"You said: {text}"}))
        assert message.output_channel is not None
        await message.output_channel.send_response(sender, dict(reply))
        if self.crashes_after_replying:
            self.crashes_after_replying -= 1
            raise RuntimeError("the process died before saving the turn")
        tracker.update(BotUttered(reply.get("text")))
        await self.tracker_store.save(tracker)


@dataclass
class Phone:
    twilio: Twilio
    channel: SmsInput
    agent: StandInAgent
    session: aiohttp.ClientSession
    number: str

    @property
    def webhook(self) -> str:
        return f"{self.twilio.webhook_base}/webhooks/sms/webhook"

    @property
    def heard(self) -> list[str]:
        """What the bot heard from this person, in order."""
        return [text for sender, text in self.agent.heard if sender == self.number]

    async def text(self, body: str) -> dict[str, Any]:
        """The person texts the business (through the emulator's signed webhook); once
        Twilio has its answer, waits for the text's own answer."""
        async with self.session.post(
            f"{self.twilio.url}/emulator/sms", json={"from": self.number, "to": BUSINESS,
                                                     "body": body},
        ) as response:  # fmt: skip
            answer: dict[str, Any] = await response.json()
        if answer["acknowledged"]:
            await self.answered(answer["sid"])
        return answer

    async def inbound(self, sid: str) -> dict[str, Any] | None:
        """The backend's record of the text with this MessageSid, if it has one."""
        profile = await self.identify()
        page = await self.api(f"/api/v1/profiles/{profile}/messages?limit=500")
        return next((m for m in page["items"] if m["provider_sid"] == sid), None)

    async def answered(self, sid: str, timeout: float = 30) -> dict[str, Any]:
        """Wait until the text's answer was given (the bot's turn, or a confirmation)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            found = await self.inbound(sid)
            if found is not None and found["turn"] != "pending":
                return found
            await asyncio.sleep(0.05)
        raise AssertionError(f"{sid} was not answered within {timeout} s")

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

    async def consent(self) -> dict[tuple[str, str], str]:
        data = await self.api(f"/api/v1/profiles/{await self.identify()}/consent")
        return {(s["channel"], s["purpose"]): s["state"] for s in data["states"]}

    async def post_raw(
        self, params: list[tuple[str, str]], signed_for: str | None = None,
        body: bytes | None = None, content_type: str = FORM, host: str | None = None,
    ) -> int:  # fmt: skip
        """POST a webhook as Twilio would (signed for `signed_for`, default the webhook)."""
        headers = {
            "X-Twilio-Signature": twilio_signature(TOKEN, signed_for or self.webhook, params),
            "Content-Type": content_type,
        }
        if host:
            headers["Host"] = host
        data = form_body(params) if body is None else body
        async with self.session.post(self.webhook, data=data, headers=headers) as answer:
            return answer.status

    async def turn(self, payload: dict[str, Any], token: str = RASA_TOKEN) -> tuple[int, Any]:
        """The backend asks the channel for a text's turn."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.post(
            f"{self.twilio.webhook_base}/webhooks/sms/turn", json=payload, headers=headers
        ) as answer:
            return answer.status, await answer.json(content_type=None)


_apps = itertools.count()
_numbers = itertools.count(2671)


@asynccontextmanager
async def serving_sms(channel: SmsInput, port: int) -> AsyncIterator[StandInAgent]:
    """A Sanic app with the channel registered as Rasa registers channels."""
    app = Sanic(f"sms_test_{next(_apps)}")
    agent = StandInAgent()
    app.ctx.agent = agent
    async with serving(app, [channel], port):
        try:
            yield agent
        finally:
            await channel.backend.close()


@asynccontextmanager
async def phone_on(twilio: Twilio, number: str, backend_url: str | None = None
                   ) -> AsyncIterator[Phone]:  # fmt: skip
    backend = BackendClient(backend_url or twilio.backend.url, twilio.backend.token, 10.0)
    channel = SmsInput(TOKEN, twilio.webhook_base, backend, rasa_token=RASA_TOKEN)
    async with (
        serving_sms(channel, twilio.webhook_port) as agent,
        aiohttp.ClientSession() as session,
    ):
        yield Phone(twilio, channel, agent, session, number)


@pytest.fixture
async def phone(twilio: Twilio, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Phone]:
    monkeypatch.setattr(Sanic, "test_mode", True)
    async with phone_on(twilio, f"+1415555{next(_numbers):04d}") as phone:
        yield phone


# --------------------------------------------------------------------------- the turn


async def test_a_text_reaches_the_bot_and_its_reply_comes_back_by_text(phone: Phone) -> None:
    answer = await phone.text("hello there")
    assert (answer["webhook_status"], answer["acknowledged"]) == (200, True)
    assert answer["webhook_body"] == EMPTY_TWIML
    assert phone.heard == ["hello there"]
    [reply] = await phone.texts_received()
    assert reply["body"] == "You said: hello there" and reply["from"] == BUSINESS

    # The backend holds both, the reply marked as an answer to the text.
    profile = await phone.identify()
    page = await phone.api(f"/api/v1/profiles/{profile}/messages")
    inbound, outbound = page["items"][1], page["items"][0]
    assert (inbound["direction"], inbound["body"], inbound["turn"]) == (
        "inbound", "hello there", "done",
    )  # fmt: skip
    assert (outbound["purpose"], outbound["in_reply_to"]) == ("conversational", inbound["id"])


async def test_a_push_through_rasas_api_is_guarded_as_marketing_not_sent_as_a_reply(
    phone: Phone,
) -> None:
    """`?output_channel=sms` on Rasa's HTTP API (the channel's own output channel, in no
    turn): Parley starting a conversation, which the door treats as marketing. This
    person wrote to the bot but never agreed to marketing: nothing goes."""
    await phone.text("hello there")
    before = await phone.bodies()
    output = phone.channel.get_output_channel()
    await output.send_text_message(phone.number, "Spring sale: 20% off!")
    assert await phone.bodies() == before
    profile = await phone.identify()
    page = await phone.api(f"/api/v1/profiles/{profile}/messages")
    assert "Spring sale: 20% off!" not in [m["body"] for m in page["items"]]


async def test_twilio_is_answered_once_the_text_is_recorded_not_when_the_bot_is_done(
    phone: Phone,
) -> None:
    phone.agent.hold = asyncio.Event()
    async with phone.session.post(
        f"{phone.twilio.url}/emulator/sms",
        json={"from": phone.number, "to": BUSINESS, "body": "slow one"},
    ) as response:
        answer = await response.json()
    # Acknowledged while the bot was still thinking, and already in the backend.
    assert answer["webhook_status"] == 200
    recorded = await phone.inbound(answer["sid"])
    assert recorded is not None and recorded["turn"] == "pending"
    assert await phone.bodies() == []
    phone.agent.hold.set()
    await phone.answered(answer["sid"])
    assert await phone.bodies() == ["You said: slow one"]


async def test_a_persons_texts_reach_the_bot_in_the_order_sent(phone: Phone) -> None:
    phone.agent.hold = asyncio.Event()
    sids = []
    for body in ("one", "two", "three"):
        sid = "SM" + os.urandom(16).hex()
        assert await phone.post_raw(incoming_sms(sid, phone.number, body)) == 200
        sids.append(sid)
    await asyncio.sleep(0.3)
    assert phone.heard == ["one"]  # the next waits for this turn to end
    phone.agent.hold.set()
    for sid in sids:
        await phone.answered(sid)
    assert phone.heard == ["one", "two", "three"]
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


# ------------------------------------------------------------- nothing acknowledged lost


async def test_a_turn_cut_short_by_a_crash_is_run_again_and_replies_once(phone: Phone) -> None:
    """The reply went out, then the process died before the conversation was saved: the
    backend asks again, the turn runs again, and the reply's send key keeps it one."""
    phone.agent.crashes_after_replying = 1
    answer = await phone.text("are you there?")
    assert phone.heard == ["are you there?", "are you there?"]
    assert await phone.bodies() == ["You said: are you there?"]
    tracker = await phone.agent.tracker_store.retrieve(phone.number)
    assert tracker is not None
    users = [e for e in tracker.events if isinstance(e, UserUttered)]
    assert [(e.text, e.message_id) for e in users] == [("are you there?", answer["sid"])]


async def test_a_turn_asked_for_again_after_it_finished_is_not_run_again(phone: Phone) -> None:
    """The turn ended but its answer to the backend was lost: asked again, the channel
    finds the text in the conversation and does nothing."""
    answer = await phone.text("once only")
    recorded = await phone.inbound(answer["sid"])
    assert recorded is not None
    payload = {"message_id": recorded["id"], "sid": answer["sid"], "from": phone.number,
               "to": BUSINESS, "body": "once only", "media_urls": []}  # fmt: skip
    assert await phone.turn(payload) == (200, {"answered": "before"})
    assert phone.heard == ["once only"]
    assert await phone.bodies() == ["You said: once only"]


async def test_the_turn_endpoint_takes_only_the_backend_with_rasas_token(phone: Phone) -> None:
    payload = {"message_id": 1, "sid": "SM" + "9" * 32, "from": phone.number, "body": "hi"}
    status, problem = await phone.turn(payload, token="not-the-token")
    assert (status, problem["status"]) == (401, 401)
    for bad in ({}, {**payload, "sid": "SM'; --"}, {**payload, "message_id": "1"}, []):
        assert (await phone.turn(bad))[0] == 400  # type: ignore[arg-type]
    assert phone.heard == []


async def test_a_text_the_backend_cannot_record_is_not_acknowledged(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sanic, "test_mode", True)
    async with phone_on(twilio, "+14155550177", backend_url=f"http://127.0.0.1:{free_port()}") as p:
        sid = "SM" + os.urandom(16).hex()
        assert await p.post_raw(incoming_sms(sid, p.number, "hello?")) == 503
        assert await p.inbound(sid) is None


async def test_while_rasa_is_down_twilios_fallback_records_the_text_and_the_bot_answers_later(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rasa is down: the webhook gets no answer, Twilio falls back to the backend's
    /twilio/sms, which records the text; once Rasa is back, the bot answers it, once."""
    monkeypatch.setattr(Sanic, "test_mode", True)
    number = "+14155550178"
    async with aiohttp.ClientSession() as session, session.post(
        f"{twilio.url}/emulator/sms", json={"from": number, "to": BUSINESS, "body": "anyone?"}
    ) as response:  # fmt: skip
        answer = await response.json()
    assert (answer["webhook_status"], answer["fallback_status"]) == (0, 200)
    assert answer["acknowledged"] is True
    await asyncio.sleep(1.5)  # the backend has asked for the turn, and failed
    async with phone_on(twilio, number) as phone:
        await phone.answered(answer["sid"])
        assert phone.heard == ["anyone?"]
        assert await phone.bodies() == ["You said: anyone?"]


# ------------------------------------------------------------------------ keywords


async def test_stop_is_applied_by_the_backend_and_never_reaches_the_bot(phone: Phone) -> None:
    await phone.text("hi")
    await phone.text("  Stop! ")
    assert phone.heard == ["hi"]
    bodies = await phone.bodies()
    assert bodies[0] == "You said: hi"
    assert len(bodies) == 2 and "unsubscribed" in bodies[1]

    # After STOP the bot's own replies are refused at the door: nothing more is sent.
    await phone.text("are you still there?")
    assert phone.heard == ["hi", "are you still there?"]
    assert len(await phone.bodies()) == 2

    await phone.text("START")
    await phone.text("hello again")
    assert (await phone.bodies())[2:] == [
        "Brightdesk: you are subscribed to our texts. Msg & data rates may apply. "
        "Reply HELP for help, STOP to opt out.",
        "You said: hello again",
    ]


def _opts_out(phone: Phone) -> Callable[[UserMessage], Awaitable[None]]:
    """What the bot's opt-out action does: withdraw SMS consent, with the text's record
    as evidence; the reply that follows is the response confirming it."""

    async def withdraw(message: UserMessage) -> None:
        profile = (await phone.channel.backend.identify("sms", phone.number)).profile
        for purpose in ("marketing", "transactional"):
            await phone.channel.backend.record_consent(
                profile.id, "sms", purpose, "withdraw", wording="(asked unprompted)",
                reply=message.text or "", metadata={"message_id": message.metadata["message_id"]},
            )  # fmt: skip

    return withdraw


async def test_an_opt_out_the_bot_understood_is_confirmed_by_text_exactly_once(
    phone: Phone,
) -> None:
    said = "please stop texting me"
    phone.agent.actions[said] = _opts_out(phone)
    phone.agent.answers[said] = {"text": "Done: Brightdesk won't text you any more.",
                                 "utter_action": "utter_optout_done"}  # fmt: skip
    phone.agent.crashes_after_replying = 1  # and the turn runs twice
    answer = await phone.text(said)
    assert phone.heard == [said, said]
    assert await phone.bodies() == ["Done: Brightdesk won't text you any more."]
    states = await phone.consent()
    assert states[("sms", "marketing")] == states[("sms", "transactional")] == "withdrawn"
    recorded = await phone.inbound(answer["sid"])
    assert recorded is not None
    ledger = (await phone.api(f"/api/v1/profiles/{await phone.identify()}/consent"))["ledger"]
    assert {line["channel_metadata"]["message_id"] for line in ledger} == {recorded["id"]}
    profile = await phone.identify()
    page = await phone.api(f"/api/v1/profiles/{profile}/messages")
    [confirmation] = [m for m in page["items"] if m["direction"] == "outbound"]
    assert (confirmation["purpose"], confirmation["in_reply_to"]) == ("compliance", recorded["id"])

    # Nothing more after it, whatever the bot says.
    await phone.text("why?")
    assert len(await phone.bodies()) == 1


async def test_a_number_the_phone_library_does_not_know_is_still_honoured(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """+1 555 numbers are fictional, as in the README: the library calls them invalid,
    yet a text from one is recorded, answered, and its STOP applied."""
    monkeypatch.setattr(Sanic, "test_mode", True)
    number = f"+1555{random.randrange(10**7):07d}"
    async with phone_on(twilio, number) as phone:
        await phone.text("hi")
        await phone.text("STOP")
        assert phone.heard == ["hi"]
        bodies = await phone.bodies()
        assert bodies[0] == "You said: hi" and "unsubscribed" in bodies[1]
        assert (await phone.consent())[("sms", "marketing")] == "withdrawn"


# ----------------------------------------- requests as Twilio documents them, and forgeries


async def test_a_text_as_twilio_documents_it_blank_fields_and_all_reaches_the_bot(
    phone: Phone,
) -> None:
    sid = "SM" + os.urandom(16).hex()
    params = incoming_sms(sid, phone.number, "hi from a real phone")
    assert ("FromCity", "") in params
    assert await phone.post_raw(params) == 200
    await phone.answered(sid)
    assert phone.heard == ["hi from a real phone"]


async def test_a_picture_without_words_is_recorded_with_its_media(phone: Phone) -> None:
    sid = "MM" + os.urandom(16).hex()
    params = image_only_mms(sid, phone.number)
    assert await phone.post_raw(params) == 200
    received = await phone.answered(sid)
    assert received["direction"] == "inbound" and received["body"] == ""
    assert received["media_urls"] == [dict(params)["MediaUrl0"]]


@pytest.mark.parametrize(
    ("case", "expected"), [("valid", 200), ("forged", 403), ("missing", 403), ("elsewhere", 403)]
)
async def test_only_texts_signed_by_twilio_for_this_url_are_taken(
    phone: Phone, case: str, expected: int
) -> None:
    sid = "SM" + os.urandom(16).hex()
    params = incoming_sms(sid, phone.number, "let me in")
    headers = {"Content-Type": FORM}
    if case != "missing":
        token = "not-the-token" if case == "forged" else TOKEN
        url = "https://elsewhere.example/webhooks/sms/webhook" if case == "elsewhere" else None
        headers["X-Twilio-Signature"] = twilio_signature(token, url or phone.webhook, params)
    async with phone.session.post(phone.webhook, data=form_body(params), headers=headers) as r:
        assert r.status == expected
    if expected == 200:
        await phone.answered(sid)
        assert phone.heard == ["let me in"]
    else:
        assert await phone.inbound(sid) is None
        assert phone.heard == []


async def test_a_retried_delivery_is_recorded_and_answered_once(phone: Phone) -> None:
    sid = "SM" + os.urandom(16).hex()
    params = incoming_sms(sid, phone.number, "just once")
    assert await phone.post_raw(params) == 200
    assert await phone.post_raw(params) == 200
    await phone.answered(sid)
    await asyncio.sleep(0.3)
    assert phone.heard == ["just once"]
    assert await phone.bodies() == ["You said: just once"]


async def test_a_signed_request_without_a_sender_is_refused_clearly(phone: Phone) -> None:
    assert await phone.post_raw([("MessageSid", "SM" + "1" * 32), ("Body", "hi")]) == 400
    assert phone.heard == []


async def test_the_public_url_setting_is_what_signatures_cover(
    twilio: Twilio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a proxy Twilio signs the public URL, not the one Rasa sees."""
    monkeypatch.setattr(Sanic, "test_mode", True)
    public = "https://chat.brightdesk.example"
    backend = BackendClient(twilio.backend.url, twilio.backend.token, 10.0)
    channel = SmsInput(auth_token=TOKEN, public_url=public, backend=backend)
    number = "+14155550100"
    local = f"{twilio.webhook_base}/webhooks/sms/webhook"
    async with serving_sms(channel, twilio.webhook_port), aiohttp.ClientSession() as session:
        for signed_for, expected in ((local, 403), (public + "/webhooks/sms/webhook", 200)):
            params = incoming_sms("SM" + os.urandom(16).hex(), number, "x")
            headers = {"X-Twilio-Signature": twilio_signature(TOKEN, signed_for, params),
                       "Content-Type": FORM}  # fmt: skip
            async with session.post(local, data=form_body(params), headers=headers) as answer:
                assert answer.status == expected


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/json", "text/plain"]
)
async def test_a_body_the_signature_did_not_cover_is_refused(
    phone: Phone, content_type: str
) -> None:
    """The forgery: a valid signature over the bare URL, and From and Body in a body
    of another type, which the signature check would not have read."""
    sid = "SM" + os.urandom(16).hex()
    body = "".join(
        f'--x\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (("MessageSid", sid), ("From", phone.number),
                            ("To", BUSINESS), ("Body", "STOP"))
    ).encode() + b"--x--\r\n"  # fmt: skip
    assert await phone.post_raw([], body=body, content_type=content_type) == 415
    assert await phone.inbound(sid) is None


async def test_a_text_signed_for_the_host_it_claims_is_refused(phone: Phone) -> None:
    sid = "SM" + os.urandom(16).hex()
    params = incoming_sms(sid, phone.number, "STOP")
    forged_url = "http://attacker.example/webhooks/sms/webhook"
    assert await phone.post_raw(params, signed_for=forged_url, host="attacker.example") == 403
    assert await phone.inbound(sid) is None


async def test_an_oversized_signed_text_is_refused_not_acknowledged(phone: Phone) -> None:
    sid = "SM" + os.urandom(16).hex()
    assert await phone.post_raw(incoming_sms(sid, phone.number, "x" * MAX_BODY_BYTES)) == 413
    assert await phone.inbound(sid) is None


# ------------------------------------------------------------------ the conversation


async def test_a_message_is_found_in_a_conversation_by_its_id() -> None:
    store = InMemoryTrackerStore(Domain.empty())
    tracker = await store.get_or_create_tracker("+14155550101")
    tracker.update(UserUttered("hi", message_id="SMabc"))
    await store.save(tracker)
    assert await in_conversation(store, "+14155550101", "SMabc")
    assert not await in_conversation(store, "+14155550101", "SMdef")
    assert not await in_conversation(store, "+14155550102", "SMabc")
