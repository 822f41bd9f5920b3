"""Alexa: a custom skill whose endpoint is this Rasa channel (`/webhooks/alexa/webhook`).

Every request is verified first (`channels.alexa_verification`); one that fails is
answered 400 and goes no further. Then, by request type:
- LaunchRequest ("Alexa, open brightdesk"): the bot is greeted (`/greet`);
- IntentRequest: `CatchAllIntent` passes what was said (its `query` slot) to Rasa;
  the built-in intents become what the bot understands: Help asks what it can do,
  Yes and No are "yes" and "no", Fallback is a misunderstanding, Stop and Cancel
  say goodbye and end the session;
- SessionEndedRequest (and anything else): an empty response, Rasa is not called.

Rasa answers into a collecting output channel; the replies are spoken as one SSML
message (short pauses between them, buttons read out as "You can say: A, B, or C"),
with the last question as the reprompt. The session stays open, except after Stop,
Cancel or the bot's goodbye. The conversation is the Alexa user id.

Options in bot/credentials.yml (none secret): `reprompt` (what Alexa says when the
person stays silent and the bot asked nothing) and `end_session_after` (responses after
which the session ends; default `utter_goodbye`). The skill id and the trust root are
settings (`PARLEY_ALEXA_SKILL_ID`, `PARLEY_ALEXA_TRUST_ROOT`); the interaction model
to paste in the Alexa developer console is bot/alexa/interaction-model.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.clock import Clock, system_clock
from bot.settings import PROJECT_ROOT, settings
from channels.alexa_verification import (
    AlexaRequestVerifier,
    CachedChainFetcher,
    ChainFetcher,
    HttpChainFetcher,
    VerificationFailed,
    load_trust_roots,
    lookup,
)

log = logging.getLogger("parley.channels.alexa")

CATCH_ALL_INTENT = "CatchAllIntent"
CATCH_ALL_SLOT = "query"
# What Rasa is told for each built-in intent: `/intent` messages skip NLU.
GREETING = "/greet"
MISUNDERSTOOD = "/nlu_fallback"
GOODBYE = "/goodbye"
BUILT_IN_INTENTS = {
    "AMAZON.HelpIntent": "/what_can_you_do",
    "AMAZON.NavigateHomeIntent": "/what_can_you_do",
    # The person's own words, so an answer to a consent question is kept as said.
    "AMAZON.YesIntent": "yes",
    "AMAZON.NoIntent": "no",
    "AMAZON.FallbackIntent": MISUNDERSTOOD,
    "AMAZON.StopIntent": GOODBYE,
    "AMAZON.CancelIntent": GOODBYE,
}
ENDING_INTENTS = frozenset({"AMAZON.StopIntent", "AMAZON.CancelIntent"})
PAUSE = '<break time="300ms"/>'
DEFAULT_REPROMPT = "What else can I help you with?"
SORRY = "Sorry, something went wrong on our side. Please try again in a moment."
# ASK's answer when there is nothing to say (SessionEndedRequest and the like).
EMPTY_RESPONSE: dict[str, Any] = {"version": "1.0", "response": {}}
OPTIONS = frozenset({"reprompt", "end_session_after"})


class AlexaOutput(CollectingOutputChannel):
    """Collects the bot's replies, with the response each came from (`utter_action`)."""

    @classmethod
    def name(cls) -> str:
        return "alexa"

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        for part in text.strip().split("\n\n"):
            message = self._message(recipient_id, text=part)
            await self._persist_message(_with_action(message, kwargs))

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        message = self._message(recipient_id, text=text, buttons=buttons)
        await self._persist_message(_with_action(message, kwargs))


def _with_action(message: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    action = kwargs.get("utter_action")
    return {**message, "utter_action": action} if action else message


@dataclass(frozen=True)
class Turn:
    """What to tell Rasa for one Alexa request, and whether the session ends after it."""

    text: str
    ends_session: bool = False


def turn_of(request: dict[str, Any]) -> Turn | None:
    """The turn an Alexa request makes; None for requests Rasa never sees."""
    kind = request.get("type")
    if kind == "LaunchRequest":
        return Turn(GREETING)
    if kind != "IntentRequest":
        return None
    intent = lookup(request, "intent", "name")
    if intent == CATCH_ALL_INTENT:
        said = lookup(request, "intent", "slots", CATCH_ALL_SLOT, "value")
        text = said.strip() if isinstance(said, str) else ""
        return Turn(text or MISUNDERSTOOD)
    return Turn(BUILT_IN_INTENTS.get(str(intent), MISUNDERSTOOD), intent in ENDING_INTENTS)


def you_can_say(buttons: Iterable[dict[str, Any]]) -> str:
    titles = [str(b["title"]).strip() for b in buttons if str(b.get("title") or "").strip()]
    if not titles:
        return ""
    if len(titles) == 1:
        return f"You can say: {titles[0]}."
    if len(titles) == 2:
        return f"You can say: {titles[0]} or {titles[1]}."
    return f"You can say: {', '.join(titles[:-1])}, or {titles[-1]}."


def spoken(message: dict[str, Any]) -> str:
    """A reply as it is read out: its text, then its buttons as choices."""
    parts = [str(message.get("text") or "").strip(), you_can_say(message.get("buttons") or [])]
    return " ".join(part for part in parts if part)


def ssml(parts: list[str]) -> dict[str, str]:
    body = PAUSE.join(escape(part) for part in parts)
    return {"type": "SSML", "ssml": f"<speak>{body}</speak>"}


def alexa_response(
    messages: list[dict[str, Any]], *, ends_session: bool, reprompt: str
) -> dict[str, Any]:
    """The ASK response for the bot's replies to one request."""
    parts = [text for text in (spoken(m) for m in messages) if text]
    answer: dict[str, Any] = {}
    if parts:
        answer["outputSpeech"] = ssml(parts)
    if not ends_session:
        questions = [spoken(m) for m in messages if str(m.get("text") or "").rstrip().endswith("?")]
        answer["reprompt"] = {"outputSpeech": ssml([questions[-1] if questions else reprompt])}
    answer["shouldEndSession"] = ends_session
    return {"version": "1.0", "response": answer}


def user_id(envelope: dict[str, Any]) -> str | None:
    found = lookup(envelope, "session", "user", "userId") or lookup(
        envelope, "context", "System", "user", "userId"
    )
    return found if isinstance(found, str) and found else None


class AlexaNotConfigured(Exception):
    """The Alexa channel cannot start as configured (Rasa does not start either)."""


class AlexaInput(InputChannel):
    """Rasa input channel for an Alexa custom skill (see the module docstring)."""

    @classmethod
    def name(cls) -> str:
        return "alexa"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> AlexaInput:
        options = dict(credentials or {})
        unknown = sorted(set(options) - OPTIONS)
        if unknown:
            raise ValueError(
                f"channels.alexa.AlexaInput: unknown option(s) {', '.join(unknown)}; it takes "
                f"{', '.join(sorted(OPTIONS))}. The skill id and trust root are settings: "
                "PARLEY_ALEXA_SKILL_ID, PARLEY_ALEXA_TRUST_ROOT."
            )
        end_after = options.get("end_session_after", ["utter_goodbye"])
        if isinstance(end_after, str):
            end_after = [end_after]
        return cls(
            reprompt=str(options.get("reprompt") or DEFAULT_REPROMPT),
            end_session_after=[str(name) for name in end_after or []],
        )

    def __init__(
        self,
        *,
        reprompt: str = DEFAULT_REPROMPT,
        end_session_after: Iterable[str] = ("utter_goodbye",),
        fetch_chain: ChainFetcher | None = None,
        clock: Clock = system_clock,
    ) -> None:
        """`fetch_chain` and `clock` are for tests: Rasa uses HTTPS and the system clock."""
        self.reprompt = reprompt
        self.end_session_after = frozenset(end_session_after)
        self._fetch_chain = fetch_chain
        self._clock = clock

    def verifier(self) -> AlexaRequestVerifier:
        """The request verifier, from the settings (read when Rasa starts the channel)."""
        configured = settings()
        root = configured.alexa_trust_root
        if root is not None and not root.is_absolute():
            root = PROJECT_ROOT / root
        if configured.alexa_skill_id is None:
            if configured.public_url:
                # A deployment: any Alexa skill could otherwise talk to this bot.
                raise AlexaNotConfigured(
                    "PARLEY_PUBLIC_URL is set (a deployment) but PARLEY_ALEXA_SKILL_ID is "
                    "not: without it, requests from any Alexa skill would be answered. Set "
                    "it to your skill's id (amzn1.ask.skill.…), or remove the alexa channel "
                    "from the credentials file."
                )
            log.warning("alexa_skill_id_unset effect=requests_for_any_skill_accepted")
        return AlexaRequestVerifier(
            trust_roots=load_trust_roots(root),
            fetch_chain=self._fetch_chain or CachedChainFetcher(HttpChainFetcher()),
            skill_id=configured.alexa_skill_id,
            clock=self._clock,
        )

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        verifier = self.verifier()
        alexa_webhook = Blueprint("alexa_webhook", __name__)

        @alexa_webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @alexa_webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            outcome = await verifier.verify(request.headers, request.body)
            if isinstance(outcome, VerificationFailed):
                log.warning("alexa_request_refused reason=%r", outcome.reason)
                return _json({"error": "not verified as sent by Alexa"}, status=400)
            envelope = outcome.envelope
            request_type = lookup(envelope, "request", "type")
            sender = user_id(envelope)
            turn = turn_of(envelope["request"])
            if turn is None:
                log.info("alexa_request type=%s rasa=no", request_type)
                return _json(EMPTY_RESPONSE)
            if sender is None:
                log.warning("alexa_request_refused reason='no user id'")
                return _json({"error": "no user id"}, status=400)
            log.info("alexa_request type=%s conversation=%s", request_type, sender)
            collector = AlexaOutput()
            message = UserMessage(turn.text, collector, sender, input_channel=self.name())
            try:
                await on_new_message(message)
            except Exception:
                log.exception("alexa_turn_failed conversation=%s", sender)
                return _json(alexa_response([{"text": SORRY}], ends_session=True, reprompt=""))
            said_goodbye = any(
                m.get("utter_action") in self.end_session_after for m in collector.messages
            )
            return _json(
                alexa_response(
                    collector.messages,
                    ends_session=turn.ends_session or said_goodbye,
                    reprompt=self.reprompt,
                )
            )

        return alexa_webhook


def _json(body: dict[str, Any], status: int = 200) -> HTTPResponse:
    # The standard library's encoder: Sanic's default (ujson) writes "<\/speak>".
    return response.json(body, status=status, dumps=json.dumps)
