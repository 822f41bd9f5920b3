"""The Twilio Voice channel, served by a real Sanic app as Rasa serves it.

The channel is registered with Rasa's own `register()`, so requests go through the same
handler as in `rasa run`; the agent behind it is a stand-in that answers through the
output channel the way Rasa's processor does (`send_response` with each `BotUttered`'s
message, `utter_action` included). Requests are signed with the twilio library's
`RequestValidator`, as Twilio signs them.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from urllib.parse import quote

import aiohttp
import pytest
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered
from rasa.shared.exceptions import InvalidConfigException
from sanic import Sanic
from twilio.request_validator import RequestValidator

from bot.settings import settings
from channels.twilio_webhook import FORM, MAX_BODY_BYTES
from channels.voice import VoiceInput
from message_rules.speech import speakable
from tests.bot.conftest import serving
from tests.servers import free_port
from tests.twilio_requests import form_body, incoming_call, twilio_signature

TOKEN = "voice-test-auth-token"
CALLER = "+14155552671"
BUSINESS = "+15557654321"
CALL_SID = "CA" + "1" * 32
SAFE = "!$'()*,:@/?"  # what the channel leaves unencoded in its URLs' queries
XML = '<?xml version="1.0" encoding="UTF-8"?>'
GATHER = 'bargeIn="true" input="speech dtmf" method="POST" speechTimeout="2" timeout="5"'


def bot(
    text: str,
    buttons: list[dict[str, str]] | None = None,
    action: str | None = None,
    image: str | None = None,
) -> BotUttered:
    """A bot message as Rasa records it (`create_bot_utterance`: the response's name
    travels in the metadata as `utter_action`)."""
    data = {"elements": None, "quick_replies": None, "buttons": buttons, "attachment": image,
            "image": image, "custom": None}  # fmt: skip
    return BotUttered(text, data, {"utter_action": action} if action else {})


CAPABILITIES = [
    {"title": "Plans and prices", "payload": "/list_products"},
    {"title": "Book a demo", "payload": "/book_demo"},
    {"title": "Talk to a person", "payload": "/human_handoff"},
]


def brightdesk(text: str) -> list[BotUttered]:
    """What the bot answers, by what it hears."""
    if text == "/greet":
        return [
            bot("I'm a bot: Brightdesk's virtual assistant.", action="utter_iamabot"),
            bot("Hi! What's your name?", action="utter_greet_new"),
        ]
    if text == "what can you do":
        return [
            bot("I can help with **plans**, demos and more.", CAPABILITIES, "utter_capabilities")
        ]
    if text == "bye":
        return [bot("Goodbye, and thanks for stopping by!", action="utter_goodbye")]
    if text == "talk to a person":
        return [
            bot(
                "I've asked a person from Brightdesk to join this conversation. "
                "I'll stay quiet until they hand you back to me.",
                action="utter_handoff_started",
            )
        ]
    if text == "quiet":  # a paused conversation: Rasa predicts nothing
        return []
    if text == "boom":
        raise RuntimeError("the model is not loaded")
    if text == "show me":
        return [bot("Here is our dashboard.", image="https://x.example/dash.png")]
    return [bot(f"You said: {text}. What else?")]


@dataclass
class StandInAgent:
    """Answers like Rasa's agent: each reply's message goes through the output channel
    as in `MessageProcessor._send_bot_messages`."""

    heard: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.heard.append(message)
        for reply in brightdesk(message.text):
            await message.output_channel.send_response(message.sender_id, reply.message())

    @property
    def texts(self) -> list[str]:
        return [m.text for m in self.heard]


@dataclass
class Answer:
    status: int
    content_type: str
    body: str

    @property
    def twiml(self) -> ET.Element:
        return ET.fromstring(self.body)  # noqa: S314 (our own TwiML)

    @property
    def said(self) -> list[str]:
        return [say.text or "" for say in self.twiml.iter("Say")]

    @property
    def action(self) -> str:
        gather = self.twiml.find("Gather")
        assert gather is not None, self.body
        return gather.attrib["action"]

    @property
    def redirect(self) -> str:
        redirect = self.twiml.find("Redirect")
        assert redirect is not None, self.body
        return redirect.text or ""

    @property
    def hung_up(self) -> bool:
        return self.twiml.find("Hangup") is not None


@dataclass
class Phone:
    """Plays Twilio against the channel: signed form posts, as Twilio makes them."""

    base: str
    agent: StandInAgent
    session: aiohttp.ClientSession
    public_base: str = ""

    @property
    def call_url(self) -> str:
        return f"{self.base}/webhooks/voice/call"

    def form(self, **extra: str) -> dict[str, str]:
        return {
            "CallSid": CALL_SID, "AccountSid": "AC" + "0" * 32, "From": CALLER,
            "To": BUSINESS, "CallStatus": "ringing", "Direction": "inbound",
            "ApiVersion": "2010-04-01", **extra,
        }  # fmt: skip

    async def post(
        self,
        url: str,
        form: dict[str, str],
        signed_for: str | None = None,
        signature: str | None = "sign",
        token: str = TOKEN,
    ) -> Answer:
        """POST `form` to `url` (a public URL is mapped to this server), signed for
        `signed_for` (default: the URL Twilio called) unless `signature` is given/None."""
        called = url
        local = url.replace(self.public_base, self.base, 1) if self.public_base else url
        headers = {}
        if signature == "sign":
            signature = RequestValidator(token).compute_signature(signed_for or called, form)
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        async with self.session.post(local, data=form, headers=headers) as response:
            return Answer(response.status, response.content_type, await response.text())

    async def call(self) -> Answer:
        return await self.post(self.call_url, self.form())

    async def say(self, answer: Answer, speech: str) -> Answer:
        return await self.post(
            answer.action,
            self.form(CallStatus="in-progress", SpeechResult=speech, Confidence="0.9"),
        )

    async def press(self, answer: Answer, digits: str) -> Answer:
        return await self.post(answer.action, self.form(CallStatus="in-progress", Digits=digits))

    async def stay_silent(self, answer: Answer) -> Answer:
        return await self.post(answer.redirect, self.form(CallStatus="in-progress"))


_apps = itertools.count()
StartPhone = Callable[..., Awaitable[Phone]]


@pytest.fixture
async def start_phone(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StartPhone]:
    """Starts Sanic with the voice channel on a free loopback port."""
    # Test mode: several apps in one process (Sanic otherwise touches up its class
    # once per app and refuses a second app).
    monkeypatch.setattr(Sanic, "test_mode", True)
    async with AsyncExitStack() as running:

        async def start(channel: VoiceInput | None = None, public_base: str = "") -> Phone:
            app = Sanic(f"voice_test_{next(_apps)}")
            agent = StandInAgent()
            app.ctx.agent = agent
            port = free_port()
            channel = channel or VoiceInput(auth_token=TOKEN)
            if not public_base:
                # What Rasa's settings would say its address is: this server's.
                channel.base_url = f"http://127.0.0.1:{port}"
            base = await running.enter_async_context(serving(app, [channel], port))
            session = await running.enter_async_context(aiohttp.ClientSession())
            return Phone(base, agent, session, public_base)

        yield start


def query(**params: str) -> str:
    return "&".join(f"{name}={quote(value, safe=SAFE)}" for name, value in params.items())


# ------------------------------------------------------------------ a call, turn by turn


async def test_the_routes_are_the_call_webhook_the_gather_action_and_health(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    async with phone.session.get(f"{phone.base}/webhooks/voice/") as health:
        assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert VoiceInput.name() == "voice"


async def test_a_new_call_greets_the_caller_inside_a_gather_that_listens_for_speech_and_keys(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.call()

    hook = f"{phone.base}/webhooks/voice/gather"
    prompt = query(prompt="Hi! What's your name?")
    assert answer.status == 200
    assert answer.content_type == "text/xml"
    assert answer.body == (
        f'{XML}<Response><Gather action="{hook}?{prompt}" {GATHER}>'
        "<Say>I'm a bot: Brightdesk's virtual assistant.</Say>"
        '<Pause length="1" />'
        "<Say>Hi! What's your name?</Say>"
        "</Gather>"
        f'<Redirect method="POST">{hook}?{prompt}&amp;silence=1</Redirect>'
        "</Response>"
    )
    [heard] = phone.agent.heard
    # The caller's number is the conversation: the one their texts use too.
    assert (heard.text, heard.sender_id, heard.input_channel) == ("/greet", CALLER, "voice")


async def test_buttons_are_read_as_press_1_for_and_offered_to_the_keypad(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "what can you do")

    listing = (
        "Press 1 for Plans and prices, press 2 for Book a demo, "
        "press 3 for Talk to a person, or just say it."
    )
    spoken = f"I can help with plans, demos and more. {listing}"
    buttons = (
        '[["Plans and prices","/list_products"],["Book a demo","/book_demo"],'
        '["Talk to a person","/human_handoff"]]'
    )
    hook = f"{phone.base}/webhooks/voice/gather"
    carried = query(buttons=buttons, prompt=spoken).replace("&", "&amp;")
    assert phone.agent.texts == ["/greet", "what can you do"]
    assert answer.body == (
        f'{XML}<Response><Gather action="{hook}?{carried}" bargeIn="true" '
        'hints="Plans and prices, Book a demo, Talk to a person" input="speech dtmf" '
        'method="POST" numDigits="1" speechTimeout="2" timeout="5">'
        f"<Say>{spoken}</Say>"
        "</Gather>"
        f'<Redirect method="POST">{hook}?{carried}&amp;silence=1</Redirect>'
        "</Response>"
    )


@pytest.mark.parametrize(
    ("digits", "payload"),
    [("1", "/list_products"), ("2", "/book_demo"), ("3", "/human_handoff")],
)
async def test_a_key_sends_the_payload_of_that_button(
    start_phone: StartPhone, digits: str, payload: str
) -> None:
    phone = await start_phone()
    menu = await phone.say(await phone.call(), "what can you do")
    await phone.press(menu, digits)
    assert phone.agent.texts[-1] == payload


@pytest.mark.parametrize(
    ("speech", "heard"),
    [
        ("Book a demo.", "/book_demo"),
        ("Two", "/book_demo"),
        ("option 3", "/human_handoff"),
        ("How much is the team plan?", "How much is the team plan?"),
    ],
)
async def test_saying_a_choice_sends_its_payload_and_anything_else_goes_through_as_said(
    start_phone: StartPhone, speech: str, heard: str
) -> None:
    phone = await start_phone()
    menu = await phone.say(await phone.call(), "what can you do")
    answer = await phone.say(menu, speech)
    assert phone.agent.texts[-1] == heard
    if heard == speech:
        assert answer.said == [f"You said: {speech}. What else?"]


async def test_without_buttons_keyed_digits_are_an_answer(start_phone: StartPhone) -> None:
    phone = await start_phone()
    answer = await phone.press(await phone.call(), "25")
    assert phone.agent.texts == ["/greet", "25"]
    assert answer.said == ["You said: 25. What else?"]


async def test_a_key_that_is_no_option_is_explained_and_the_choices_offered_again(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    menu = await phone.say(await phone.call(), "what can you do")
    answer = await phone.press(menu, "7")

    assert phone.agent.texts == ["/greet", "what can you do"]
    assert answer.said == [
        "Sorry, that key isn't one of the options. I can help with plans, demos and more. "
        "Press 1 for Plans and prices, press 2 for Book a demo, press 3 for Talk to a "
        "person, or just say it."
    ]
    assert answer.action == menu.action  # the same choices, still tamper-proof
    assert answer.redirect.endswith("&silence=1")


async def test_silence_is_asked_about_once_then_the_call_ends_politely(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    greeting = await phone.call()

    again = await phone.stay_silent(greeting)
    hook = f"{phone.base}/webhooks/voice/gather"
    prompt = query(prompt="Hi! What's your name?")
    assert again.body == (
        f'{XML}<Response><Gather action="{hook}?{prompt}" {GATHER}>'
        "<Say>Sorry, I didn't catch that. Hi! What's your name?</Say>"
        "</Gather>"
        f'<Redirect method="POST">{hook}?{prompt}&amp;silence=2</Redirect>'
        "</Response>"
    )

    bye = await phone.stay_silent(again)
    assert bye.body == (
        f"{XML}<Response>"
        "<Say>I still can't hear you, so I'll hang up now. Call again any time. Goodbye!</Say>"
        "<Hangup /></Response>"
    )
    assert phone.agent.texts == ["/greet"]  # silence never reaches the bot


async def test_speaking_after_a_silence_starts_the_count_again(start_phone: StartPhone) -> None:
    phone = await start_phone()
    again = await phone.stay_silent(await phone.call())
    answer = await phone.say(again, "Ada")
    assert phone.agent.texts == ["/greet", "Ada"]
    assert answer.redirect.endswith("&silence=1")


async def test_the_bots_goodbye_is_spoken_and_the_call_hung_up(start_phone: StartPhone) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "bye")
    assert answer.body == (
        f"{XML}<Response><Say>Goodbye, and thanks for stopping by!</Say><Hangup /></Response>"
    )


async def test_a_handoff_says_a_person_will_get_back_and_hangs_up(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "talk to a person")
    assert answer.said == [
        "I've asked a person from Brightdesk to join this conversation. "
        "I'll stay quiet until they hand you back to me.",
        "A person from our team will get back to you at this number. Goodbye!",
    ]
    assert answer.hung_up and answer.twiml.find("Gather") is None


async def test_a_paused_conversation_is_explained_rather_than_left_silent(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "quiet")
    assert answer.body == (
        f"{XML}<Response>"
        "<Say>A person from our team will get back to you at this number. Goodbye!</Say>"
        "<Hangup /></Response>"
    )


async def test_when_the_bot_fails_the_caller_hears_an_apology_not_an_error(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "boom")
    assert answer.status == 200
    assert answer.said == [
        "Sorry, something went wrong on our side. Please call again later. Goodbye!"
    ]
    assert answer.hung_up


async def test_images_are_skipped_and_their_text_spoken(start_phone: StartPhone) -> None:
    phone = await start_phone()
    answer = await phone.say(await phone.call(), "show me")
    assert answer.said == ["Here is our dashboard."]


@pytest.mark.parametrize("hidden", ["+266696687", "Anonymous", "client:alice"])
async def test_a_caller_with_a_hidden_number_is_told_so_and_never_reaches_the_bot(
    start_phone: StartPhone, hidden: str
) -> None:
    phone = await start_phone()
    answer = await phone.post(phone.call_url, phone.form(From=hidden))
    assert answer.status == 200
    assert answer.said == [
        "Sorry, I can only take calls from a number I can see. "
        "Please call again without hiding your number. Goodbye!"
    ]
    assert answer.hung_up
    assert phone.agent.heard == []


@pytest.mark.parametrize("missing", ["From", "CallSid"])
async def test_a_signed_request_without_caller_or_call_is_a_400_in_twiml(
    start_phone: StartPhone, missing: str
) -> None:
    phone = await start_phone()
    form = phone.form()
    del form[missing]
    answer = await phone.post(phone.call_url, form)
    assert (answer.status, answer.content_type) == (400, "text/xml")
    assert answer.body == f"{XML}<Response><Hangup /></Response>"
    assert phone.agent.heard == []


# ------------------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("valid", 200),
        ("forged", 403),
        ("missing", 403),
        ("wrong_url", 403),
        ("tampered_form", 403),
    ],
)
@pytest.mark.parametrize("route", ["call", "gather"])
async def test_only_requests_signed_by_twilio_for_this_url_reach_the_bot(
    start_phone: StartPhone, route: str, case: str, expected: int
) -> None:
    phone = await start_phone()
    url = phone.call_url
    form = phone.form()
    if route == "gather":
        url = (await phone.call()).action
        form = phone.form(CallStatus="in-progress", SpeechResult="hello")
    heard_before = len(phone.agent.heard)

    if case == "valid":
        answer = await phone.post(url, form)
    elif case == "forged":
        forged = RequestValidator("not-the-auth-token").compute_signature(url, form)
        answer = await phone.post(url, form, signature=forged)
    elif case == "missing":
        answer = await phone.post(url, form, signature=None)
    elif case == "wrong_url":
        elsewhere = url.replace(phone.base, "https://elsewhere.example")
        answer = await phone.post(url, form, signed_for=elsewhere)
    else:
        signature = RequestValidator(TOKEN).compute_signature(url, form)
        answer = await phone.post(url, {**form, "From": "+14155550000"}, signature=signature)

    assert answer.status == expected
    assert answer.content_type == "text/xml"
    assert len(phone.agent.heard) == heard_before + (1 if expected == 200 else 0)


async def test_tampered_choices_in_the_action_url_are_refused(start_phone: StartPhone) -> None:
    phone = await start_phone()
    menu = await phone.say(await phone.call(), "what can you do")
    form = phone.form(CallStatus="in-progress", Digits="1")
    signature = RequestValidator(TOKEN).compute_signature(menu.action, form)
    tampered = menu.action.replace("/list_products", "/opt_out")
    assert tampered != menu.action

    answer = await phone.post(tampered, form, signature=signature)
    assert answer.status == 403
    assert phone.agent.texts == ["/greet", "what can you do"]


async def test_a_replayed_signed_request_is_still_valid_and_repeats_that_turn(
    start_phone: StartPhone,
) -> None:
    """Twilio's signature has no timestamp or nonce: a captured request replays as
    valid (docs/channels.md says so). It can only repeat what the caller said."""
    phone = await start_phone()
    greeting = await phone.call()
    first = await phone.say(greeting, "Ada")
    replay = await phone.say(greeting, "Ada")
    assert (first.status, replay.status) == (200, 200)
    assert first.body == replay.body
    assert phone.agent.texts == ["/greet", "Ada", "Ada"]


async def test_without_an_auth_token_every_request_is_refused(start_phone: StartPhone) -> None:
    phone = await start_phone(VoiceInput(auth_token=None))
    answer = await phone.call()
    assert answer.status == 403
    assert phone.agent.heard == []


async def test_the_public_url_setting_is_what_signatures_and_twiml_urls_use(
    start_phone: StartPhone, monkeypatch: pytest.MonkeyPatch
) -> None:
    public = "https://parley.example.com"
    monkeypatch.setenv("PARLEY_PUBLIC_URL", public + "/")
    monkeypatch.setenv("PARLEY_TWILIO_AUTH_TOKEN", TOKEN)
    settings.cache_clear()
    try:
        channel = VoiceInput.from_credentials(None)
    finally:
        settings.cache_clear()
    phone = await start_phone(channel, public_base=public)

    public_call = f"{public}/webhooks/voice/call"
    answer = await phone.post(public_call, phone.form())
    assert answer.status == 200
    assert answer.action.startswith(f"{public}/webhooks/voice/gather?")
    assert answer.redirect.startswith(f"{public}/webhooks/voice/gather?")
    follow_up = await phone.say(answer, "Ada")
    assert follow_up.status == 200

    local = await phone.post(phone.call_url, phone.form())  # signed for the local URL
    assert local.status == 403
    assert phone.agent.texts == ["/greet", "Ada"]


async def test_voice_and_timing_come_from_credentials(start_phone: StartPhone) -> None:
    channel = VoiceInput.from_credentials(
        {"voice": "Polly.Joanna", "language": "en-GB", "timeout": 3, "speech_timeout": "auto"}
    )
    channel.auth_token = TOKEN
    phone = await start_phone(channel)
    answer = await phone.call()
    gather = answer.twiml.find("Gather")
    assert gather is not None
    assert (gather.attrib["timeout"], gather.attrib["speechTimeout"]) == ("3", "auto")
    assert gather.attrib["language"] == "en-GB"
    assert {(s.attrib["voice"], s.attrib["language"]) for s in answer.twiml.iter("Say")} == {
        ("Polly.Joanna", "en-GB")
    }


def test_an_unknown_credentials_option_stops_rasa_with_the_options_named() -> None:
    with pytest.raises(InvalidConfigException, match=r"auth_token.*language, speech_timeout"):
        VoiceInput.from_credentials({"auth_token": "do-not-put-it-here"})


# ------------------------------------------------------------------------ spoken text


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("Team is **$35** per agent.", "Team is $35 per agent."),
        (
            "See [our privacy notice](https://brightdesk.example/privacy).",
            "See our privacy notice.",
        ),
        ("Read https://brightdesk.example/privacy.", "Read brightdesk.example/privacy."),
        ("Plans:\n- Starter\n- Team\n- Enterprise", "Plans: Starter. Team. Enterprise"),
        ("Great 🎉 see you _soon_!", "Great see you soon!"),
        ("Use `code` and snake_case_names", "Use code and snake_case_names"),
    ],
)
def test_markdown_links_and_emoji_are_spoken_sensibly(text: str, spoken: str) -> None:
    assert speakable(text) == spoken


# ---------------------------------------------------------- calls Parley placed (follow-ups)

# What the backend's call door puts in a follow-up call's TwiML (backend/messaging/call_door.py): the
# message, then a <Gather> posting to the gather route with the question to re-ask.
FOLLOW_UP_QUESTION = "Your demo is tomorrow at 3pm. Shall I text you the link?"


def placed_call_form(phone: Phone, **extra: str) -> dict[str, str]:
    """What Twilio posts during a call placed through its API: From is the business."""
    return phone.form(
        From=BUSINESS, To=CALLER, Direction="outbound-api", CallStatus="in-progress", **extra
    )


def follow_up_gather(phone: Phone, **params: str) -> str:
    return f"{phone.base}/webhooks/voice/gather?{query(prompt=FOLLOW_UP_QUESTION, **params)}"


async def test_the_answer_to_a_call_parley_placed_goes_to_the_called_persons_conversation(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.post(
        follow_up_gather(phone), placed_call_form(phone, SpeechResult="yes please")
    )
    assert answer.status == 200
    [heard] = phone.agent.heard
    # The person's number (To), where their texts and the recorded follow-up are: never
    # the business's own number (From).
    assert (heard.text, heard.sender_id, heard.input_channel) == ("yes please", CALLER, "voice")
    assert answer.said == ["You said: yes please. What else?"]
    assert answer.action.startswith(f"{phone.base}/webhooks/voice/gather?")


async def test_keys_pressed_after_a_placed_calls_message_go_to_the_persons_conversation(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    await phone.post(follow_up_gather(phone), placed_call_form(phone, Digits="12"))
    [heard] = phone.agent.heard
    assert (heard.text, heard.sender_id) == ("12", CALLER)


async def test_silence_after_a_placed_calls_message_asks_its_question_again(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    answer = await phone.post(follow_up_gather(phone, silence="1"), placed_call_form(phone))
    assert answer.said == [f"Sorry, I didn't catch that. {FOLLOW_UP_QUESTION}"]
    assert answer.redirect.endswith("&silence=2")
    assert phone.agent.heard == []

    again = await phone.post(answer.redirect, placed_call_form(phone))
    assert again.hung_up
    assert phone.agent.heard == []


async def test_a_call_coming_in_is_the_callers_conversation_whatever_it_was_called(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    form = phone.form(CallStatus="in-progress", SpeechResult="hi", Direction="inbound")
    await phone.post(follow_up_gather(phone), form)
    [heard] = phone.agent.heard
    assert heard.sender_id == CALLER and form["From"] == CALLER and form["To"] == BUSINESS


@pytest.mark.parametrize(
    "tampered",
    [{"Direction": "inbound"}, {"To": "+14155550000"}],
    ids=["direction", "to"],
)
async def test_the_direction_and_number_of_a_call_cannot_be_changed_unsigned(
    start_phone: StartPhone, tampered: dict[str, str]
) -> None:
    """Forging an answer into someone else's conversation needs Twilio's signature."""
    phone = await start_phone()
    url = follow_up_gather(phone)
    signed = placed_call_form(phone, SpeechResult="stop")
    signature = RequestValidator(TOKEN).compute_signature(url, signed)
    answer = await phone.post(url, {**signed, **tampered}, signature=signature)
    assert answer.status == 403
    assert phone.agent.heard == []


# ----------------------------------------- requests as Twilio documents them, and forgeries


async def _post_raw(
    phone: Phone, url: str, body: bytes, signature: str, content_type: str = FORM,
    host: str | None = None,
) -> Answer:  # fmt: skip
    headers = {"X-Twilio-Signature": signature, "Content-Type": content_type}
    if host:
        headers["Host"] = host
    async with phone.session.post(url, data=body, headers=headers) as response:
        return Answer(response.status, response.content_type, await response.text())


async def test_a_call_as_twilio_documents_it_blank_fields_and_all_reaches_the_bot(
    start_phone: StartPhone,
) -> None:
    phone = await start_phone()
    params = incoming_call(CALL_SID, CALLER)
    assert ("CallerZip", "") in params
    signature = twilio_signature(TOKEN, phone.call_url, params)
    answer = await _post_raw(phone, phone.call_url, form_body(params), signature)
    assert answer.status == 200
    assert phone.agent.texts == ["/greet"]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/json", "text/plain"]
)
async def test_a_body_the_signature_did_not_cover_is_refused(
    start_phone: StartPhone, content_type: str
) -> None:
    """The forgery: a valid signature over the bare URL, and the caller in a body of
    another type, which the signature check would not have read."""
    phone = await start_phone()
    body = (
        b'--x\r\nContent-Disposition: form-data; name="From"\r\n\r\n+14155550000\r\n'
        b'--x\r\nContent-Disposition: form-data; name="CallSid"\r\n\r\nCA1\r\n--x--\r\n'
    )
    signature = twilio_signature(TOKEN, phone.call_url, [])
    answer = await _post_raw(phone, phone.call_url, body, signature, content_type)
    assert (answer.status, answer.content_type) == (415, "text/xml")
    assert phone.agent.heard == []


async def test_a_call_signed_for_the_host_it_claims_is_refused(start_phone: StartPhone) -> None:
    phone = await start_phone()
    params = incoming_call(CALL_SID, CALLER)
    signature = twilio_signature(TOKEN, "http://attacker.example/webhooks/voice/call", params)
    answer = await _post_raw(
        phone, phone.call_url, form_body(params), signature, host="attacker.example"
    )
    assert answer.status == 403
    assert phone.agent.heard == []


async def test_an_oversized_signed_call_is_refused_before_parsing(start_phone: StartPhone) -> None:
    phone = await start_phone()
    params = [*incoming_call(CALL_SID, CALLER), ("Pad", "x" * MAX_BODY_BYTES)]
    signature = twilio_signature(TOKEN, phone.call_url, params)
    answer = await _post_raw(phone, phone.call_url, form_body(params), signature)
    assert answer.status == 413
    assert phone.agent.heard == []
