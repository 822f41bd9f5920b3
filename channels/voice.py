"""Phone calls through Twilio Voice: the caller talks or keys, the bot speaks (TwiML).

Routes, under `/webhooks/voice/`:
- `POST call`: Twilio's "A call comes in" webhook. Sends `/greet` to Rasa for the caller.
- `POST gather`: where each `<Gather>` posts what the caller said (`SpeechResult`) or
  keyed (`Digits`), and where the `<Redirect>` after a silent `<Gather>` leads.
- `GET /`: health.

Every request must carry a valid `X-Twilio-Signature` over the public URL Twilio called
(`channels.twilio_webhook`), else 403 and Rasa hears nothing. The conversation is the
person's E.164 number, the sender id the SMS channel uses too, so a person's texts and
calls are one conversation and one profile: the caller (`From`) of a call that comes in,
the person called (`To`) of a call Parley placed (`Direction` `outbound-api`: a follow-up
the backend's call door placed, whose `<Gather>` posts the person's answer to `gather`).

Each answer speaks the bot's messages inside a `<Gather input="speech dtmf">` (so the
caller can interrupt), reads buttons as "Press 1 for …, or just say it.", and carries
the buttons and the question to re-ask in the query of the `<Gather>` action and
`<Redirect>` URLs: Twilio signs those URLs, so they cannot be altered, and any replica
can take the next request. Silence is re-asked once, then the call ends politely; the
bot's goodbye (`utter_goodbye`) and a hand-off to a person end it too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import MultiDict
from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.exceptions import InvalidConfigException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse
from twilio.twiml.voice_response import Gather, VoiceResponse

from bot.settings import settings
from channels.twilio_webhook import Refusal, TwilioForm, twilio_form
from message_rules.speech import (
    MAX_KEYPAD_CHOICES,
    Choice,
    Prompt,
    as_sentence,
    first_value,
    last_question,
    speakable,
    with_query,
)

log = logging.getLogger("parley.channels.voice")

GREET = "/greet"
OPTIONS = frozenset({"voice", "language", "timeout", "speech_timeout"})  # credentials.yml
# Responses after which the call ends: the bot's goodbye, and the hand-off to a person
# (the conversation is paused, so the bot would only be silent from then on).
GOODBYE_RESPONSES = frozenset({"utter_goodbye"})
HANDOFF_RESPONSES = frozenset({"utter_handoff_started"})
MAX_SILENCES = 2  # the first is re-asked, the second ends the call

SORRY_SILENCE = "Sorry, I didn't catch that."
SORRY_KEY = "Sorry, that key isn't one of the options."
GOODBYE_SILENCE = "I still can't hear you, so I'll hang up now. Call again any time. Goodbye!"
HANDED_OFF = "A person from our team will get back to you at this number. Goodbye!"
TROUBLE = "Sorry, something went wrong on our side. Please call again later. Goodbye!"
HIDDEN_NUMBER = (
    "Sorry, I can only take calls from a number I can see. "
    "Please call again without hiding your number. Goodbye!"
)

# What Twilio puts in `From` when the caller's number is withheld or unknown.
ANONYMOUS_NUMBERS = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696", "+86282452253"})
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Turn:
    """What the bot answered in one turn, ready to be spoken."""

    spoken: list[str]  # one entry per message, its buttons read out
    choices: list[Choice]  # the buttons of the last message that had any
    ends_call: bool  # the bot said goodbye
    handed_off: bool  # a person takes over: the bot stays quiet from now on

    @classmethod
    def of(cls, messages: Sequence[Mapping[str, Any]]) -> Turn:
        spoken: list[str] = []
        choices: list[Choice] = []
        for message in messages:
            text = speakable(message.get("text") or "")
            buttons = [
                Choice(speakable(str(b.get("title", ""))), str(b.get("payload", "")))
                for b in message.get("buttons") or []
                if b.get("title") and b.get("payload")
            ][:MAX_KEYPAD_CHOICES]
            if buttons:
                choices = buttons
                text = f"{as_sentence(text)} {choices_read_out(buttons)}".strip()
            if text:
                spoken.append(text)
        actions = {message.get("utter_action") for message in messages}
        return cls(
            spoken=spoken,
            choices=choices,
            ends_call=bool(actions & GOODBYE_RESPONSES),
            handed_off=bool(actions & HANDOFF_RESPONSES),
        )


class VoiceOutput(CollectingOutputChannel):
    """Collects the bot's messages for one turn, with the response each came from.

    Named "voice", so a response can have a variant for calls (`channel: voice`).
    Images and attachments have nothing to say on a call and are dropped.
    """

    @classmethod
    def name(cls) -> str:
        return "voice"

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        for part in text.strip().split("\n\n"):
            await self._persist_message(
                {"recipient_id": recipient_id, "text": part, **_origin(kwargs)}
            )

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._persist_message(
            {"recipient_id": recipient_id, "text": text, "buttons": buttons, **_origin(kwargs)}
        )

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        return None

    async def send_attachment(self, recipient_id: str, attachment: str, **kwargs: Any) -> None:
        return None


def _origin(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The response a message came from (Rasa passes it as `utter_action`), if any."""
    action = kwargs.get("utter_action")
    return {"utter_action": action} if action else {}


# ------------------------------------ choices, read out and said (text: message_rules.speech)


def choices_read_out(choices: Sequence[Choice]) -> str:
    """ "Press 1 for Pricing, press 2 for Book a demo, or just say it." """
    presses = [f"press {n} for {choice.title}" for n, choice in enumerate(choices, 1)]
    listing = ", ".join(presses)
    return f"{listing[0].upper()}{listing[1:]}, or just say it."


def choice_said(speech: str, choices: Sequence[Choice]) -> Choice | None:
    """The choice the caller named: its title, or its number ("two", "option 2")."""
    said = _words(speech)
    for prefix in ("option ", "number ", "press "):
        said = said.removeprefix(prefix)
    for number, choice in enumerate(choices, 1):
        if said in (_words(choice.title), str(number), _NUMBER_WORDS[number - 1]):
            return choice
    return None


def _words(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


# ----------------------------------------------------------------------- the channel


class VoiceInput(InputChannel):
    """Twilio Voice calls: speech and keypad in, spoken TwiML out."""

    @classmethod
    def name(cls) -> str:
        return "voice"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> VoiceInput:
        """Secrets and the public URL come from settings; credentials.yml may set the
        voice (`voice`, `language`) and how long to listen (`timeout`, `speech_timeout`)."""
        options = credentials or {}
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise InvalidConfigException(
                f"channels.voice.VoiceInput: unknown option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(sorted(OPTIONS))}. Secrets and the public URL are settings "
                "(PARLEY_TWILIO_AUTH_TOKEN, PARLEY_PUBLIC_URL), never credentials."
            )
        config = settings()
        token = config.twilio_auth_token
        return cls(
            auth_token=token.get_secret_value() if token else None,
            public_url=config.public_url,
            voice=options.get("voice"),
            language=options.get("language"),
            timeout=int(options.get("timeout", 5)),
            speech_timeout=str(options.get("speech_timeout", 2)),
        )

    def __init__(
        self,
        auth_token: str | None,
        public_url: str | None = None,
        voice: str | None = None,
        language: str | None = None,
        timeout: int = 5,
        speech_timeout: str = "2",
    ) -> None:
        self.auth_token = auth_token
        # What Twilio's signatures and the TwiML's URLs use: the public URL, else Rasa's
        # configured address (never the request's Host header).
        self.base_url = (public_url or settings().webhook_base_url).rstrip("/")
        self.voice = voice
        self.language = language
        self.timeout = timeout
        self.speech_timeout = speech_timeout
        if not auth_token:
            log.warning("voice.no_auth_token every call is refused: set PARLEY_TWILIO_AUTH_TOKEN")

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        hook = Blueprint("voice_webhook", __name__)

        @hook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @hook.route("/call", methods=["POST"])
        async def call(request: Request) -> HTTPResponse:
            form = self._form(request)
            if not isinstance(form, MultiDict):
                return form
            log.info("voice.call_started call=%s", form.get("CallSid"))
            return await self._answer(request, form, on_new_message, GREET)

        @hook.route("/gather", methods=["POST"])
        async def gather(request: Request) -> HTTPResponse:
            form = self._form(request)
            if not isinstance(form, MultiDict):
                return form
            prompt = Prompt.from_query(request.args)
            speech = (form.get("SpeechResult") or "").strip()
            digits = (form.get("Digits") or "").strip()
            if speech:
                choice = choice_said(speech, prompt.choices)
                return await self._answer(
                    request, form, on_new_message, choice.payload if choice else speech
                )
            if digits:
                if not prompt.choices:
                    return await self._answer(request, form, on_new_message, digits)
                number = int(digits) if digits.isdigit() else 0
                if 1 <= number <= len(prompt.choices):
                    return await self._answer(
                        request, form, on_new_message, prompt.choices[number - 1].payload
                    )
                return _twiml(self._ask_again(request, prompt, SORRY_KEY, silences=0))
            return _twiml(self._after_silence(request, form, prompt))

        return hook

    # ------------------------------------------------------------------ requests

    def _form(self, request: Request) -> TwilioForm | HTTPResponse:
        """The parameters of a call's webhook Twilio signed; else a refusal in TwiML
        (413, 415, 400 or 403)."""
        form = twilio_form(request, self.auth_token or "", self.base_url)
        if isinstance(form, Refusal):
            log.warning("voice.refused status=%s path=%s", form.status, request.path)
            return _twiml(_hang_up(), status=form.status)
        if not form.get("From") or not form.get("CallSid"):
            log.warning("voice.refused reason=missing_caller path=%s", request.path)
            return _twiml(_hang_up(), status=400)
        return form

    async def _answer(
        self,
        request: Request,
        form: TwilioForm,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        text: str,
    ) -> HTTPResponse:
        person, call_sid = person_on_the_call(form), form.get("CallSid")
        if not _E164.fullmatch(person) or person in ANONYMOUS_NUMBERS:
            log.info("voice.hidden_number call=%s", call_sid)
            return _twiml(self._farewell([HIDDEN_NUMBER]))
        output = VoiceOutput()
        try:
            await on_new_message(UserMessage(text, output, person, input_channel=self.name()))
        except Exception:
            log.exception("voice.rasa_failed call=%s", call_sid)
            return _twiml(self._farewell([TROUBLE]))
        turn = Turn.of(output.messages)
        if not turn.spoken:
            log.info("voice.call_ended call=%s reason=bot_quiet", call_sid)
            return _twiml(self._farewell([HANDED_OFF]))
        if turn.handed_off:
            log.info("voice.call_ended call=%s reason=handoff", call_sid)
            return _twiml(self._farewell([*turn.spoken, HANDED_OFF]))
        if turn.ends_call:
            log.info("voice.call_ended call=%s reason=goodbye", call_sid)
            return _twiml(self._farewell(turn.spoken))
        prompt = Prompt(turn.choices, last_question(turn.spoken))
        return _twiml(self._listen(request, turn.spoken, prompt, silences=1))

    def _after_silence(self, request: Request, form: TwilioForm, prompt: Prompt) -> VoiceResponse:
        try:
            silences = int(first_value(request.args, "silence") or 1)
        except ValueError:
            silences = MAX_SILENCES
        if silences >= MAX_SILENCES:
            log.info("voice.call_ended call=%s reason=silence", form.get("CallSid"))
            return self._farewell([GOODBYE_SILENCE])
        return self._ask_again(request, prompt, SORRY_SILENCE, silences)

    # -------------------------------------------------------------------- TwiML

    def _ask_again(
        self, request: Request, prompt: Prompt, sorry: str, silences: int
    ) -> VoiceResponse:
        """`sorry`, then the question again; `silences`: how many in a row so far."""
        said = [sorry, prompt.question]
        listing = choices_read_out(prompt.choices) if prompt.choices else ""
        if listing not in prompt.question:
            said.append(listing)
        return self._listen(request, [" ".join(filter(None, said))], prompt, silences + 1)

    def _listen(
        self, request: Request, spoken: Iterable[str], prompt: Prompt, silences: int
    ) -> VoiceResponse:
        """Say `spoken` while listening (the caller may interrupt), then, if the caller
        stays silent, come back to count the silence."""
        hook = self._hook_url(request)
        gather = Gather(
            input="speech dtmf",
            action=with_query(hook, prompt.query()),
            method="POST",
            timeout=self.timeout,
            speech_timeout=self.speech_timeout,
            barge_in=True,
            num_digits=1 if prompt.choices else None,
            hints=", ".join(c.title for c in prompt.choices) or None,
            language=self.language,
        )
        self._say_all(gather, spoken)
        twiml = VoiceResponse()
        twiml.append(gather)
        twiml.redirect(with_query(hook, prompt.query(silences)), method="POST")
        return twiml

    def _farewell(self, spoken: Iterable[str]) -> VoiceResponse:
        twiml = VoiceResponse()
        self._say_all(twiml, spoken)
        twiml.hangup()
        return twiml

    def _say_all(self, parent: VoiceResponse | Gather, spoken: Iterable[str]) -> None:
        for number, text in enumerate(spoken):
            if number:
                parent.pause(length=1)
            parent.say(text, voice=self.voice, language=self.language)

    def _hook_url(self, request: Request) -> str:
        """The absolute URL of the gather route, as Twilio reaches it."""
        prefix = request.path.rstrip("/").rsplit("/", 1)[0]
        return f"{self.base_url}{prefix}/gather"


def person_on_the_call(form: Mapping[str, Any]) -> str:
    """The number of the person Parley is talking with, the conversation's id: who
    called (`From`), or for a call Parley placed through Twilio's API (`Direction`
    `outbound-api`: `From` is the business, `To` the person) who was called. Twilio's
    signature covers the form, `Direction` included, so no one else can choose."""
    placed = first_value(form, "Direction") == "outbound-api"
    return first_value(form, "To" if placed else "From") or ""


def _hang_up() -> VoiceResponse:
    twiml = VoiceResponse()
    twiml.hangup()
    return twiml


def _twiml(twiml: VoiceResponse, status: int = 200) -> HTTPResponse:
    return response.text(str(twiml), status=status, content_type="text/xml")
