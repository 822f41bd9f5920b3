"""SMS through Twilio: a replacement for Rasa's `twilio` channel.

- Every webhook is checked against `X-Twilio-Signature` first; a bad one gets 403.
- Twilio gets its answer at once (empty TwiML); the text is processed in the
  background, one at a time per sender so that a person's texts keep their order, and
  at most `PARLEY_SMS_CONCURRENT_TURNS` turns at once, so that a burst queues instead
  of slowing every turn until the bot's own calls time out.
- The backend records each text once per MessageSid (a retried delivery is dropped)
  and answers STOP, START and HELP itself; only other texts reach the bot.
- The bot's replies leave through the backend's outbound message API, the one door
  that checks consent, paces and sends; images go out as MMS.

Webhook: `POST /webhooks/sms/webhook` ("A message comes in" in Twilio's console).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from actions.backend_client import BackendClient, BackendError, BackendRejected
from bot.settings import settings
from channels.twilio_webhook import Refusal, twilio_form

logger = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
# Seconds between the attempts to hand a text to the backend while it is unreachable.
RETRY_DELAYS = (0.5, 2.0, 5.0)
SEND_TIMEOUT = 60.0


@dataclass(frozen=True)
class IncomingText:
    sid: str
    sender: str
    to: str
    body: str
    media_urls: list[str]
    opt_out_type: str | None

    @classmethod
    def from_form(cls, form: Any) -> IncomingText | None:
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
            body=(form.get("Body") or "").replace("¡", "@"),
            media_urls=media,
            opt_out_type=form.get("OptOutType") or None,
        )


class SmsOutput(OutputChannel):
    """The bot's replies to one text, sent through the backend's one door."""

    @classmethod
    def name(cls) -> str:
        return "sms"

    def __init__(self, backend: BackendClient, in_reply_to: int | None) -> None:
        self.backend = backend
        self.in_reply_to = in_reply_to

    async def _send(
        self, recipient_id: str, body: str, media_urls: list[str] | None = None
    ) -> None:
        try:
            await self.backend.send_text(
                recipient_id, body, "conversational", media_urls, self.in_reply_to
            )
        except BackendRejected as refused:
            # Consent withdrawn meanwhile, or a number Twilio refuses: nothing to retry.
            logger.warning("sms.reply_refused status=%s type=%s", refused.status,
                           refused.problem.get("type"))  # fmt: skip
        except BackendError as error:
            # Not retried: the backend may have sent it before the answer was lost.
            logger.error("sms.reply_unconfirmed error=%s", error)

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self._send(recipient_id, text)

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
    ) -> None:
        config = settings()
        if auth_token is None and config.twilio_auth_token is not None:
            auth_token = config.twilio_auth_token.get_secret_value()
        self.auth_token = auth_token or ""
        # What Twilio's signatures cover: the public URL, else Rasa's configured address.
        self.base_url = public_url or config.webhook_base_url
        self._backend = backend
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._queues: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Turns the bot works on at once; the rest wait their turn in arrival order.
        # Without a bound a burst of texts starts every turn together, each then runs
        # slowly, and the bot's calls to the action server and backend time out.
        self._turns = asyncio.Semaphore(config.sms_concurrent_turns)

    @property
    def backend(self) -> BackendClient:
        if self._backend is None:
            config = settings()
            token = config.backend_token.get_secret_value() if config.backend_token else None
            # Longer than the one door may make a text wait for its number's turn
            # (PARLEY_SMS_MAX_WAIT, 30 s by default).
            self._backend = BackendClient(config.backend_url, token, SEND_TIMEOUT)
        return self._backend

    def get_output_channel(self) -> OutputChannel:
        # For messages Rasa's HTTP API makes the bot send, outside any reply.
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
            if not self._first_time(text.sid):
                return response.text(EMPTY_TWIML, content_type="text/xml")
            self._process_in_order(text, on_new_message)
            return response.text(EMPTY_TWIML, content_type="text/xml")

        return webhook

    def _first_time(self, sid: str) -> bool:
        """False for a MessageSid this process has seen lately (the backend's record
        catches repeats across replicas)."""
        if sid in self._seen:
            return False
        self._seen[sid] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        return True

    def _process_in_order(
        self, text: IncomingText, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> None:
        previous = self._queues.get(text.sender)
        task = asyncio.create_task(self._process(text, on_new_message, previous))
        self._queues[text.sender] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._queues.get(text.sender) is finished:
                del self._queues[text.sender]

        task.add_done_callback(done)

    async def _process(
        self,
        text: IncomingText,
        on_new_message: Callable[[UserMessage], Awaitable[Any]],
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        receipt = None
        retried = False
        for delay in (*RETRY_DELAYS, None):
            try:
                receipt = await self.backend.receive_text(
                    text.sid, text.sender, text.to, text.body, text.media_urls,
                    text.opt_out_type,
                )  # fmt: skip
                break
            except BackendRejected as refused:
                logger.error("sms.text_refused status=%s detail=%s", refused.status,
                             refused.problem.get("detail"))  # fmt: skip
                return
            except BackendError as error:
                if delay is None:
                    logger.error("sms.text_lost sid=%s error=%s", text.sid, error)
                    return
                retried = True
                await asyncio.sleep(delay)
        assert receipt is not None
        # After a timeout the backend may have recorded our own first attempt: a
        # "duplicate" then is this very delivery, not a repeat from Twilio.
        if (receipt.duplicate and not retried) or receipt.handled:
            return
        try:
            async with self._turns:
                await on_new_message(
                    UserMessage(
                        text.body,
                        SmsOutput(self.backend, receipt.message_id),
                        text.sender,
                        input_channel=self.name(),
                        metadata={
                            "message_id": receipt.message_id,
                            "media_urls": text.media_urls,
                        },
                    )
                )
        except Exception:  # one bad turn must not stop the channel
            logger.exception("sms.turn_failed message_id=%s", receipt.message_id)

    async def settled(self) -> None:
        """Wait until every text received so far has been processed (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
