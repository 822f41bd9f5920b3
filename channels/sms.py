"""SMS through Twilio: a replacement for Rasa's `twilio` channel.

Nothing Twilio was told arrived is ever lost:

- Twilio posts texts to the backend's `/twilio/sms` ("A message comes in"), which
  records each before answering, so Twilio never waits for the bot.
  `POST /webhooks/sms/webhook` here is the second way in ("Primary handler fails"): it
  checks the request as every Twilio request is checked (channels.twilio_webhook), then
  hands the text to the backend, which records it once per MessageSid and applies STOP,
  START and HELP in the same transaction. Only then does Twilio get its 200 (empty
  TwiML); if the backend cannot record it, Twilio gets 503: the text is never
  acknowledged and dropped.
- The backend then has the bot answer every recorded text exactly once, in the order
  each person sent them (backend.messaging.text_turns): it calls `POST /webhooks/sms/turn` here
  (with Rasa's token), again after any crash. A turn runs under the conversation's lock
  and is skipped when the text (its MessageSid) is in the conversation already.
- The bot's replies leave through the backend's one door, which checks consent, paces
  and sends; images go out as MMS. Each reply carries a send key (the text and its
  place in the turn), so a turn run again after a crash never sends a reply twice. The
  confirmation of an opt-out the bot understood ("please stop texting me") goes as the
  one compliance answer to that text, which the door lets through after the withdrawal.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rasa.core.agent import Agent
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.core.tracker_store import TrackerStore
from rasa.shared.core.events import UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.backend_client import BackendClient, BackendError, BackendRejected
from bot.settings import settings
from bot.tracker_store import ParleySQLTrackerStore
from channels.twilio_webhook import Refusal, TwilioForm, twilio_form

logger = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Seconds the webhook waits for the backend to record a text (Twilio waits 15).
RECORD_TIMEOUT = 10.0
# Longer than the one door may make a reply wait for its number's turn
# (PARLEY_SMS_MAX_WAIT, 30 s by default).
SEND_TIMEOUT = 60.0
# The bot's responses that confirm an opt-out: sent as the text's one compliance answer.
OPT_OUT_CONFIRMATIONS = frozenset({"utter_optout_done"})
_SID = re.compile(r"[A-Za-z0-9]{2,64}")
SEND_IN_PROGRESS = "urn:parley:problem:send-in-progress"


@dataclass(frozen=True)
class IncomingText:
    sid: str
    sender: str
    to: str
    body: str
    media_urls: list[str]
    opt_out_type: str | None

    @classmethod
    def from_form(cls, form: TwilioForm) -> IncomingText | None:
        sid, sender, to = form.get("MessageSid"), form.get("From"), form.get("To")
        if not (sid and sender and to):
            return None
        try:
            count = min(int(form.get("NumMedia") or 0), 10)
        except ValueError:
            count = 0
        media = [url for i in range(count) if (url := form.get(f"MediaUrl{i}"))]
        return cls(
            sid=sid,
            sender=sender,
            to=to,
            # Some carriers turn @ into ¡ on the way (GSM-7's 0x00 and 0x40).
            body=(form.get("Body") or "").replace("¡", "@")[:1600],
            media_urls=media,
            opt_out_type=form.get("OptOutType") or None,
        )


@dataclass(frozen=True)
class TextTurn:
    """A recorded text the backend asks the bot to answer (`POST /webhooks/sms/turn`)."""

    message_id: int
    sid: str
    sender: str
    body: str
    media_urls: list[str]

    @classmethod
    def from_json(cls, data: Any) -> TextTurn | None:
        if not isinstance(data, dict):
            return None
        message_id, sid, sender = data.get("message_id"), data.get("sid"), data.get("from")
        body, media = data.get("body", ""), data.get("media_urls", [])
        if not (isinstance(message_id, int) and 0 < message_id < 2**62):
            return None
        if not (isinstance(sid, str) and _SID.fullmatch(sid)):
            return None
        if not (isinstance(sender, str) and sender and isinstance(body, str)):
            return None
        if not (isinstance(media, list) and all(isinstance(u, str) for u in media)):
            return None
        return cls(message_id, sid, sender, body, media)


class SmsOutput(OutputChannel):
    """The bot's replies to one text, sent through the backend's one door, each with a
    send key: the text and the reply's place in the turn."""

    @classmethod
    def name(cls) -> str:
        return "sms"

    def __init__(self, backend: BackendClient, in_reply_to: int | None) -> None:
        self.backend = backend
        self.in_reply_to = in_reply_to
        self._replies = 0

    async def _send(
        self,
        recipient_id: str,
        body: str,
        media_urls: list[str] | None = None,
        purpose: str = "conversational",
    ) -> None:
        key = None
        if self.in_reply_to is not None:
            self._replies += 1
            key = f"reply:{self.in_reply_to}:{self._replies}"
        else:
            # Not a reply: a message Parley starts, which the door guards as marketing.
            purpose = "marketing"
        try:
            await self.backend.send_text(
                recipient_id, body, purpose, media_urls, self.in_reply_to, send_key=key
            )
        except BackendRejected as refused:
            if refused.problem.get("type") == SEND_IN_PROGRESS:
                # An earlier run of this turn sent it, and nobody knows yet whether Twilio
                # took it: the turn is run again later, when the door can tell.
                raise
            # Consent withdrawn meanwhile, or a number Twilio refuses: nothing to retry.
            logger.warning("sms.reply_refused status=%s type=%s", refused.status,
                           refused.problem.get("type"))  # fmt: skip
        except BackendError as error:
            # Not retried here: the turn is run again, and the send key keeps it once.
            logger.error("sms.reply_unconfirmed error=%s", error)
            raise

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        confirms_opt_out = kwargs.get("utter_action") in OPT_OUT_CONFIRMATIONS
        await self._send(recipient_id, text, purpose="compliance" if confirms_opt_out else
                         "conversational")  # fmt: skip

    async def send_image_url(self, recipient_id: str, image: str, **kwargs: Any) -> None:
        await self._send(recipient_id, "", [image])

    async def send_text_with_buttons(
        self, recipient_id: str, text: str, buttons: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        # A text cannot carry buttons: their titles are offered as words to reply with,
        # which the bot understands as it understands any other answer.
        await self._send(recipient_id, with_choices(text, buttons))

    async def send_quick_replies(
        self, recipient_id: str, text: str, quick_replies: list[dict[str, Any]], **kwargs: Any
    ) -> None:
        await self._send(recipient_id, with_choices(text, quick_replies))

    async def send_custom_json(
        self, recipient_id: str, json_message: dict[str, Any], **kwargs: Any
    ) -> None:
        body = json_message.get("text") or json_message.get("body")
        media = json_message.get("media_urls") or json_message.get("media_url")
        if isinstance(media, str):
            media = [media]
        if body or media:
            await self._send(recipient_id, str(body or ""), list(media or []))


def with_choices(text: str, buttons: list[dict[str, Any]]) -> str:
    titles = [str(b["title"]) for b in buttons if b.get("title")]
    if not titles:
        return text
    choices = titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " or " + titles[-1]
    return f"{text}\nReply: {choices}"


class SmsInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "sms"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> InputChannel:
        # Secrets come from settings (PARLEY_TWILIO_AUTH_TOKEN), never from this file.
        return cls()

    def __init__(
        self,
        auth_token: str | None = None,
        public_url: str | None = None,
        backend: BackendClient | None = None,
        rasa_token: str | None = None,
    ) -> None:
        config = settings()
        if auth_token is None and config.twilio_auth_token is not None:
            auth_token = config.twilio_auth_token.get_secret_value()
        self.auth_token = auth_token or ""
        # What Twilio's signatures cover: the public URL, else Rasa's configured address.
        self.base_url = public_url or config.webhook_base_url
        if rasa_token is None and config.rasa_token is not None:
            rasa_token = config.rasa_token.get_secret_value()
        # The backend asks for turns with Rasa's API token.
        self.rasa_token = rasa_token or ""
        self._backend = backend

    @property
    def backend(self) -> BackendClient:
        if self._backend is None:
            config = settings()
            token = config.backend_token.get_secret_value() if config.backend_token else None
            self._backend = BackendClient(config.backend_url, token, SEND_TIMEOUT)
        return self._backend

    def get_output_channel(self) -> OutputChannel:
        # For messages Rasa's HTTP API makes the bot send, outside any reply: Parley
        # starting a conversation, which the door treats as marketing (consent, quiet
        # hours, the frequency cap; held until it may go).
        return SmsOutput(self.backend, None)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        webhook = Blueprint("sms_webhook", __name__)

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            form = twilio_form(request, self.auth_token, self.base_url)
            if isinstance(form, Refusal):
                logger.warning("sms.refused status=%s", form.status)
                return form.as_text()
            text = IncomingText.from_form(form)
            if text is None:
                return response.text("Bad request: MessageSid, From and To are required", 400)
            return await self._record(text)

        @webhook.route("/turn", methods=["POST"])
        async def turn(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return _problem(401, "The request needs Rasa's API token as a Bearer token.")
            try:
                asked = TextTurn.from_json(request.json)
            except Exception:  # Sanic raises on a body that is not JSON
                asked = None
            if asked is None:
                return _problem(400, "The body must be a text: message_id, sid, from, body.")
            agent: Agent | None = getattr(request.app.ctx, "agent", None)
            if agent is None or not agent.is_ready():
                return _problem(503, "No model is loaded yet; try again shortly.")
            try:
                answered = await answer_once(agent, self._message(asked))
            except Exception:  # reported to the backend, which tries again later
                logger.exception("sms.turn_failed message_id=%s", asked.message_id)
                return _problem(502, "The bot's turn failed; it is tried again later.")
            return response.json({"answered": "now" if answered else "before"})

        return webhook

    async def _record(self, text: IncomingText) -> HTTPResponse:
        """Twilio's answer: 200 once the backend holds the text, else not 200."""
        try:
            await self.backend.receive_text(
                text.sid, text.sender, text.to, text.body, text.media_urls, text.opt_out_type,
                timeout=RECORD_TIMEOUT,
            )  # fmt: skip
        except BackendRejected as refused:
            # The backend will never take this text: Twilio logs the 400 (error 11200).
            logger.error("sms.text_refused status=%s detail=%s", refused.status,
                         refused.problem.get("detail"))  # fmt: skip
            return response.text(f"Bad request: {refused.problem.get('detail')}", status=400)
        except BackendError as error:
            # Not recorded, so not acknowledged: Twilio tries its fallback URL.
            logger.error("sms.text_not_recorded sid=%s error=%s", text.sid, error)
            return response.text("Service unavailable: the text was not recorded", status=503)
        return response.text(EMPTY_TWIML, content_type="text/xml")

    def _message(self, turn: TextTurn) -> UserMessage:
        return UserMessage(
            turn.body,
            SmsOutput(self.backend, turn.message_id),
            turn.sender,
            input_channel=self.name(),
            message_id=turn.sid,
            metadata={"message_id": turn.message_id, "media_urls": turn.media_urls},
        )

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        return bool(self.rasa_token) and hmac.compare_digest(
            given.encode(), self.rasa_token.encode()
        )


async def answer_once(agent: Agent, message: UserMessage) -> bool:
    """Run the bot's turn for `message` unless its conversation has it already (a turn
    that finished, whose confirmation to the backend was lost); True if it ran now.
    Rasa saves a turn's events together at its end, so the text is in the conversation
    exactly when its turn is complete."""
    async with agent.lock_store.lock(message.sender_id):
        if await in_conversation(agent.tracker_store, message.sender_id, message.message_id):
            logger.info("sms.turn_done_before message_id=%s", message.message_id)
            return False
        assert agent.processor is not None
        await agent.processor.handle_message(message)
        return True


async def in_conversation(store: TrackerStore, sender_id: str, message_id: str) -> bool:
    """Whether the person's message with this id is in their conversation (any session)."""
    inner: Any = store
    while hasattr(inner, "_tracker_store"):  # Rasa's fail-safe and awaitable wrappers
        inner = inner._tracker_store
    if isinstance(inner, ParleySQLTrackerStore):
        return inner.has_user_message(sender_id, message_id)
    tracker = await store.retrieve_full_tracker(sender_id)
    return tracker is not None and any(
        isinstance(e, UserUttered) and e.message_id == message_id for e in tracker.events
    )


def _problem(status: int, detail: str) -> HTTPResponse:
    return response.json(
        {"type": "about:blank", "title": detail, "status": status},
        status=status,
        content_type="application/problem+json",
    )
