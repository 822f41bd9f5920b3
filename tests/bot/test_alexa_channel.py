"""What an Alexa user hears, and what reaches Rasa, through the Alexa channel.

The channel runs in a real Sanic server on loopback, registered with Rasa's own
`register()` under `/webhooks/`, as `rasa run` does; the agent is a stand-in that
answers from a script through the channel's collector, the way Rasa's processor sends
`BotUttered` messages. The channel reads its skill id and trust root from the settings
(PARLEY_ALEXA_*), trusting a certificate chain generated for the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import pytest
import yaml
from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import BotUttered

from bot.identity import identity_of
from bot.settings import PROJECT_ROOT, settings
from channels.alexa import (
    BUILT_IN_INTENTS,
    CATCH_ALL_INTENT,
    CATCH_ALL_SLOT,
    AlexaInput,
    AlexaNotConfigured,
)
from tests.bot.alexa_signing import (
    CERT_URL,
    NOW,
    SKILL_ID,
    USER_ID,
    FakeS3,
    GeneratedPki,
    body_of,
    envelope,
    intent,
    launch,
    make_pki,
    session_ended,
    signed_headers,
)
from tests.bot.conftest import make_tracker
from tests.bot.sanic_server import serving_channels

DISCLOSURE = "I'm a bot: Brightdesk's virtual assistant."
ASK_NAME = "Hi! What's your name?"
PRICE = "Team is $35 per agent per month."
CAPABILITIES = "I can tell you about plans and prices, or set you up with a demo."
GOODBYE = "Goodbye, and thanks for stopping by!"
SMS_CONSENT = (
    "Can Brightdesk text you at +14155552671? Msg & data rates may apply. <Reply STOP> "
    "at any time to opt out. Is that OK?"
)
BREAK = '<break time="300ms"/>'


def reply(text: str, action: str, buttons: list[str] | None = None) -> BotUttered:
    data = {"buttons": [{"title": t, "payload": f"/{t}"} for t in buttons]} if buttons else {}
    return BotUttered(text, data=data, metadata={"utter_action": action})


# What the stand-in bot says to each message it is told.
SCRIPT = {
    "/greet": [reply(DISCLOSURE, "utter_disclosure"), reply(ASK_NAME, "utter_ask_name")],
    "how much is the team plan": [reply(PRICE, "utter_price")],
    "/what_can_you_do": [
        reply(
            CAPABILITIES,
            "utter_capabilities",
            ["Plans and prices", "Book a demo", "Talk to a person"],
        )
    ],
    "text me your offers": [reply(SMS_CONSENT, "utter_ask_consent", ["Yes, text me", "No"])],
    "/goodbye": [reply(GOODBYE, "utter_goodbye")],
    "bye": [reply(GOODBYE, "utter_goodbye")],
}


@dataclass
class ScriptedAgent:
    """Stands in for Rasa's agent: records each message and answers from the script."""

    received: list[UserMessage] = field(default_factory=list)
    fail: bool = False

    async def handle_message(self, message: UserMessage) -> None:
        self.received.append(message)
        if self.fail:
            raise RuntimeError("the tracker store is down")
        for uttered in SCRIPT.get(message.text or "", []):
            await message.output_channel.send_response(message.sender_id, uttered.message())

    @property
    def texts(self) -> list[str | None]:
        return [m.text for m in self.received]


@dataclass
class RunningChannel:
    url: str
    agent: ScriptedAgent
    s3: FakeS3
    pki: GeneratedPki
    now: list[datetime]
    session: aiohttp.ClientSession

    async def post(
        self, sent: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        body = body_of(sent)
        async with self.session.post(
            f"{self.url}/webhooks/alexa/webhook",
            data=body,
            headers=headers or signed_headers(body, self.pki.signing_key),
        ) as answer:
            return answer.status, await answer.json()


@pytest.fixture(scope="module")
def pki() -> GeneratedPki:
    return make_pki()


@pytest.fixture
def alexa_settings(pki, tmp_path, monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("PARLEY_ALEXA_SKILL_ID", SKILL_ID)
    monkeypatch.setenv("PARLEY_ALEXA_TRUST_ROOT", str(pki.trust_bundle(tmp_path)))
    settings.cache_clear()
    yield
    settings.cache_clear()


@asynccontextmanager
async def running(pki: GeneratedPki, **options: Any) -> AsyncIterator[RunningChannel]:
    """The channel on a real Sanic server on loopback (tests/bot/sanic_server.py)."""
    now = [NOW]
    s3 = FakeS3({CERT_URL: pki.chain()})
    agent = ScriptedAgent()
    channel = AlexaInput(fetch_chain=s3, clock=lambda: now[0], **options)
    async with serving_channels([channel], agent) as url, aiohttp.ClientSession() as session:
        yield RunningChannel(url, agent, s3, pki, now, session)


@pytest.fixture
async def alexa(pki, alexa_settings) -> AsyncIterator[RunningChannel]:
    async with running(pki) as channel:
        yield channel


def speech(*parts: str) -> dict[str, str]:
    return {"type": "SSML", "ssml": f"<speak>{BREAK.join(parts)}</speak>"}


async def test_the_webhook_is_where_the_alexa_console_points(alexa) -> None:
    async with alexa.session.get(f"{alexa.url}/webhooks/alexa/") as health:
        assert (health.status, await health.json()) == (200, {"status": "ok"})
    async with alexa.session.get(f"{alexa.url}/webhooks/alexa/webhook") as wrong_method:
        assert wrong_method.status == 405


async def test_opening_the_skill_greets_the_bot_and_asks_its_question_again_on_silence(
    alexa,
) -> None:
    status, answer = await alexa.post(envelope(launch(), new_session=True))

    assert status == 200
    assert answer == {
        "version": "1.0",
        "response": {
            "outputSpeech": speech(DISCLOSURE, ASK_NAME),
            "reprompt": {"outputSpeech": speech(ASK_NAME)},
            "shouldEndSession": False,
        },
    }
    [message] = alexa.agent.received
    assert (message.text, message.sender_id, message.input_channel) == ("/greet", USER_ID, "alexa")


async def test_what_the_person_says_reaches_rasa_and_the_reply_is_spoken(alexa) -> None:
    status, answer = await alexa.post(
        envelope(intent("CatchAllIntent", "how much is the team plan"))
    )

    assert status == 200
    assert answer["response"]["outputSpeech"] == speech(PRICE)
    # The bot asked nothing: the reprompt invites the next question.
    assert answer["response"]["reprompt"] == {
        "outputSpeech": speech("What else can I help you with?")
    }
    assert answer["response"]["shouldEndSession"] is False
    assert alexa.agent.texts == ["how much is the team plan"]


async def test_buttons_are_read_out_as_what_the_person_can_say(alexa) -> None:
    _, answer = await alexa.post(envelope(intent("AMAZON.HelpIntent")))

    expected = f"{CAPABILITIES} You can say: Plans and prices, Book a demo, or Talk to a person."
    assert answer["response"]["outputSpeech"] == speech(expected)
    assert alexa.agent.texts == ["/what_can_you_do"]


async def test_the_reply_is_escaped_for_ssml_and_a_question_with_choices_is_the_reprompt(
    alexa,
) -> None:
    _, answer = await alexa.post(envelope(intent("CatchAllIntent", "text me your offers")))

    said = (
        "Can Brightdesk text you at +14155552671? Msg &amp; data rates may apply. "
        "&lt;Reply STOP&gt; at any time to opt out. Is that OK? You can say: Yes, text me or No."
    )
    assert answer["response"]["outputSpeech"] == speech(said)
    assert answer["response"]["reprompt"] == {"outputSpeech": speech(said)}


@pytest.mark.parametrize(
    ("request_", "told"),
    [
        (intent("AMAZON.YesIntent"), "yes"),
        (intent("AMAZON.NoIntent"), "no"),
        (intent("AMAZON.FallbackIntent"), "/nlu_fallback"),
        (intent("CatchAllIntent"), "/nlu_fallback"),
        (intent("CatchAllIntent", "  "), "/nlu_fallback"),
        (intent("SomeIntentNotInTheModel"), "/nlu_fallback"),
    ],
)
async def test_built_in_intents_become_what_the_bot_understands(
    alexa, request_: dict[str, Any], told: str
) -> None:
    status, answer = await alexa.post(envelope(request_))

    assert status == 200
    assert alexa.agent.texts == [told]
    assert answer["response"]["shouldEndSession"] is False


@pytest.mark.parametrize("name", ["AMAZON.StopIntent", "AMAZON.CancelIntent"])
async def test_stop_and_cancel_say_goodbye_and_end_the_session(alexa, name: str) -> None:
    _, answer = await alexa.post(envelope(intent(name)))

    assert answer == {
        "version": "1.0",
        "response": {"outputSpeech": speech(GOODBYE), "shouldEndSession": True},
    }
    assert alexa.agent.texts == ["/goodbye"]


async def test_the_bots_goodbye_ends_the_session(alexa) -> None:
    _, answer = await alexa.post(envelope(intent("CatchAllIntent", "bye")))

    assert answer["response"] == {"outputSpeech": speech(GOODBYE), "shouldEndSession": True}


async def test_a_session_ended_request_gets_an_empty_response_and_rasa_is_not_called(
    alexa,
) -> None:
    status, answer = await alexa.post(envelope(session_ended()))

    assert (status, answer) == (200, {"version": "1.0", "response": {}})
    assert alexa.agent.received == []


async def test_when_rasa_fails_alexa_apologises_and_ends_the_session(alexa) -> None:
    alexa.agent.fail = True

    status, answer = await alexa.post(envelope(intent("CatchAllIntent", "book a demo")))

    assert status == 200
    assert answer["response"] == {
        "outputSpeech": speech(
            "Sorry, something went wrong on our side. Please try again in a moment."
        ),
        "shouldEndSession": True,
    }


async def test_signature_matrix_only_verified_requests_reach_rasa(alexa) -> None:
    valid = envelope(intent("CatchAllIntent", "how much is the team plan"))
    body = body_of(valid)
    signed = signed_headers(body, alexa.pki.signing_key)
    forged = signed_headers(body, make_pki("Forger").signing_key)
    missing = {k: v for k, v in signed.items() if k != "Signature-256"}
    wrong_url = {**signed, "SignatureCertChainUrl": "https://evil.example/echo.api/cert.pem"}
    other_skill = envelope(intent("CatchAllIntent", "hi"), skill_id="amzn1.ask.skill.other")

    statuses = [
        (await alexa.post(valid, headers=forged))[0],
        (await alexa.post(valid, headers=missing))[0],
        (await alexa.post(valid, headers=wrong_url))[0],
        (await alexa.post(other_skill))[0],
        (await alexa.post(valid, headers=signed))[0],
    ]

    assert statuses == [400, 400, 400, 400, 200]
    assert alexa.agent.texts == ["how much is the team plan"]
    assert alexa.s3.fetched == [CERT_URL, CERT_URL]  # never the wrong URL


async def test_a_refused_request_gets_400_and_no_speech(alexa) -> None:
    valid = envelope(launch())
    body = body_of(valid)
    headers = {**signed_headers(body, alexa.pki.signing_key), "Signature-256": "AAAA"}

    status, answer = await alexa.post(valid, headers=headers)

    assert status == 400
    assert "response" not in answer
    assert alexa.agent.received == []


async def test_a_request_replayed_after_150_seconds_is_refused(alexa) -> None:
    sent = envelope(intent("CatchAllIntent", "how much is the team plan"))
    body = body_of(sent)
    headers = signed_headers(body, alexa.pki.signing_key)

    first, _ = await alexa.post(sent, headers=headers)
    alexa.now[0] = NOW + timedelta(seconds=151)
    replayed, _ = await alexa.post(sent, headers=headers)

    assert (first, replayed) == (200, 400)
    assert alexa.agent.texts == ["how much is the team plan"]


async def test_the_user_id_can_come_from_the_context_alone(alexa) -> None:
    sent = envelope(launch())
    del sent["session"]

    status, _ = await alexa.post(sent)

    assert status == 200
    assert alexa.agent.received[0].sender_id == USER_ID


async def test_a_verified_request_without_a_user_is_refused(alexa) -> None:
    sent = envelope(launch())
    del sent["session"]
    del sent["context"]["System"]["user"]

    status, _ = await alexa.post(sent)

    assert status == 400
    assert alexa.agent.received == []


def test_alexa_conversations_are_alexa_identities_in_the_backend() -> None:
    tracker = make_tracker(USER_ID, text="hi", channel="alexa")

    assert identity_of(tracker) == ("alexa", USER_ID)


def test_credentials_take_only_non_secret_options() -> None:
    channel = AlexaInput.from_credentials(
        {"reprompt": "Anything else?", "end_session_after": "utter_bye"}
    )
    assert (channel.reprompt, channel.end_session_after) == (
        "Anything else?",
        frozenset({"utter_bye"}),
    )

    default = AlexaInput.from_credentials(None)
    assert (default.reprompt, default.end_session_after) == (
        "What else can I help you with?",
        frozenset({"utter_goodbye"}),
    )

    with pytest.raises(ValueError, match="PARLEY_ALEXA_SKILL_ID"):
        AlexaInput.from_credentials({"skill_id": SKILL_ID})


async def test_a_trust_root_that_cannot_be_read_stops_the_channel_at_startup(
    pki, alexa_settings, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("PARLEY_ALEXA_TRUST_ROOT", str(tmp_path / "missing.pem"))
    settings.cache_clear()

    with pytest.raises(OSError):
        async with running(pki):
            pass


async def test_a_deployment_without_a_skill_id_stops_the_channel_at_startup(
    pki, alexa_settings, monkeypatch
) -> None:
    """With a public URL (a deployment) and no skill id, any Alexa skill could reach the
    bot: the channel, and so Rasa, refuse to start and say what to set."""
    monkeypatch.setenv("PARLEY_PUBLIC_URL", "https://bot.brightdesk.example")
    monkeypatch.setenv("PARLEY_ALEXA_SKILL_ID", "")
    settings.cache_clear()

    with pytest.raises(AlexaNotConfigured, match="PARLEY_ALEXA_SKILL_ID"):
        async with running(pki):
            pass

    # On one machine (no public URL) it starts (and logs that any skill is accepted).
    monkeypatch.setenv("PARLEY_PUBLIC_URL", "")
    settings.cache_clear()
    async with running(pki) as alexa:
        assert alexa.url


async def test_the_configured_reprompt_is_used_when_the_bot_asks_nothing(
    pki, alexa_settings
) -> None:
    async with running(pki, reprompt="Anything else about Brightdesk?") as alexa:
        _, answer = await alexa.post(
            envelope(intent("CatchAllIntent", "how much is the team plan"))
        )

    assert answer["response"]["reprompt"] == {
        "outputSpeech": speech("Anything else about Brightdesk?")
    }


# What the operator ships: the skill's interaction model and Rasa's credentials files.

MODEL = json.loads((PROJECT_ROOT / "bot" / "alexa" / "interaction-model.json").read_text())
LANGUAGE_MODEL = MODEL["interactionModel"]["languageModel"]
INTENTS = {i["name"]: i for i in LANGUAGE_MODEL["intents"]}


def test_the_interaction_model_has_only_intents_the_channel_handles() -> None:
    assert LANGUAGE_MODEL["invocationName"] == "brightdesk"
    assert set(INTENTS) == {CATCH_ALL_INTENT, *BUILT_IN_INTENTS}
    assert INTENTS[CATCH_ALL_INTENT]["slots"] == [
        {"name": CATCH_ALL_SLOT, "type": "AMAZON.SearchQuery"}
    ]


def test_every_catch_all_sample_has_a_carrier_phrase_as_alexa_requires() -> None:
    # The developer console refuses a model whose AMAZON.SearchQuery samples are the bare
    # slot, or that lists one sample twice, or that has characters samples may not have.
    samples = [s for intent in INTENTS.values() for s in intent.get("samples", [])]
    assert len(samples) == len(set(samples))
    for sample in INTENTS[CATCH_ALL_INTENT]["samples"]:
        assert re.fullmatch(r"[a-z' .]*\{query\}[a-z' .]*", sample), sample
        assert sample.replace("{query}", "").strip(), sample


@pytest.mark.parametrize("path", ["bot/credentials.yml", "bot/credentials.scale.yml"])
def test_rasa_credentials_configure_the_alexa_channel_with_options_it_takes(path: str) -> None:
    credentials = yaml.safe_load((PROJECT_ROOT / path).read_text())

    channel = AlexaInput.from_credentials(credentials["channels.alexa.AlexaInput"])

    assert channel.end_session_after == frozenset({"utter_goodbye"})
