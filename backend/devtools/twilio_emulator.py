"""A local Twilio: the parts of Twilio's REST API Parley uses, for tests and for trying
Parley without a Twilio account.

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` sends a message (recorded,
  never delivered anywhere) and reports its progress (`queued` → `sent` → `delivered`,
  or `undelivered` with an error code) to its `StatusCallback`, signed the way Twilio
  signs (`X-Twilio-Signature`).
- `GET …/Messages/{Sid}.json` and `GET …/Messages.json` read them back.
- `POST /emulator/sms` plays a person texting: it fires a correctly signed inbound
  webhook, with every parameter Twilio posts, at the configured SMS webhook URL and
  answers with what that URL answered. As at Twilio, a webhook that fails (no answer
  within 15 s, or not 2xx) is followed by the same text to the fallback URL ("Primary
  handler fails"), with `ErrorCode` 11200 and `ErrorUrl`; the text counts as
  acknowledged if either answered 2xx. `GET /emulator/inbound` lists every text played
  so, with what became of it.
- `GET /emulator/messages` lists everything sent, newest last.
- `POST …/Calls.json` places a call (`Twiml` inline, or `Url` to fetch it from): it
  is `initiated`, `ringing`, then the person picks up (`in-progress`) and hears the TwiML
  played as below, until it is `completed`; each step goes to its `StatusCallback`,
  signed, for the `StatusCallbackEvent`s asked for. A number in `unanswered` gives
  `no-answer`, one in `busy` gives `busy`. `GET …/Calls/{Sid}.json` and `GET …/Calls.json`
  (`To`, `From`) read calls back. A placed call waiting at its `<Gather>` is answered
  through `POST /emulator/call/{CallSid}/gather`, as below; its webhooks carry
  `Direction=outbound-api`, `From` the business and `To` the person.
- `POST /emulator/call` plays a person calling: it fires a correctly signed voice
  webhook at the configured voice webhook URL and plays the TwiML it answers as Twilio
  would (`<Say>`, `<Pause>`, `<Gather>`, `<Redirect>`, `<Hangup>`) until the call waits
  for the caller or ends. `POST /emulator/call/{CallSid}/gather` answers the waiting
  `<Gather>`: `{"speech": "…"}` or `{"digits": "1"}` post to its action URL, `{}` is
  silence (the verbs after the `<Gather>`, such as a `<Redirect>`, run). Both answer
  with the TwiML and what it did: what was said, whether the call hung up.
  `GET /emulator/calls` lists the calls, in and out, with their transcripts.

Requests are authenticated with HTTP Basic (account SID, auth token) as at Twilio, and
errors come in Twilio's JSON shape with its error codes, so the real `twilio` library
behaves against it as against Twilio. Magic numbers, as in Twilio's test credentials:
`+15005550001` is an invalid number (21211), `+15005550004` has replied STOP (21610),
and any number passed to `undeliverable` fails after sending (30003).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
import phonenumbers
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from backend.core.clock import Clock, SystemClock
from backend.core.logs import get_logger
from message_rules.sms import segments

log = get_logger(__name__)

FORM = "application/x-www-form-urlencoded"
API = "/2010-04-01/Accounts/{account}"
INVALID_NUMBER = "+15005550001"
OPTED_OUT_NUMBER = "+15005550004"
MAX_REDIRECTS = 10  # per step of a call: more is a loop
# Twilio waits this long for a webhook's answer before it counts as failed.
WEBHOOK_TIMEOUT = aiohttp.ClientTimeout(total=15)
# The statuses a call ends in.
ENDED = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# The progress events a call's status callback may ask for (StatusCallbackEvent).
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})


@dataclass
class EmulatedMessage:
    sid: str
    account_sid: str
    to: str
    from_: str
    body: str
    media: list[str]
    status_callback: str | None
    created_at: datetime
    status: str = "queued"
    error_code: int | None = None
    statuses: list[str] = field(default_factory=list)

    def as_twilio(self, base: str) -> dict[str, Any]:
        created = format_datetime(self.created_at)
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "direction": "outbound-api",
            "num_segments": str(segments(self.body)),
            "num_media": str(len(self.media)),
            "error_code": self.error_code,
            "error_message": None,
            "price": None,
            "price_unit": "USD",
            "api_version": "2010-04-01",
            "messaging_service_sid": None,
            "date_created": created,
            "date_updated": created,
            "date_sent": created if self.status in ("sent", "delivered") else None,
            "uri": f"{base}/Messages/{self.sid}.json",
            "subresource_uris": {"media": f"{base}/Messages/{self.sid}/Media.json"},
        }


@dataclass
class Call:
    """A call the emulator plays, and where its TwiML has got to: a person calling in
    (`inbound`), or a call placed through the Calls API (`outbound-api`)."""

    sid: str
    account_sid: str
    from_: str
    to: str
    url: str  # the URL whose TwiML is playing: relative URLs are resolved against it
    created_at: datetime
    direction: str = "inbound"
    # inbound: ringing, then in-progress, completed or failed; outbound: queued,
    # initiated, ringing, then in-progress and completed, or busy, no-answer, failed.
    status: str = "ringing"
    twiml: str = ""  # the last TwiML document received (or given, inline)
    listening: dict[str, str] | None = None  # the <Gather> waiting for the caller
    after_gather: list[ET.Element] = field(default_factory=list)  # run on silence
    transcript: list[dict[str, str]] = field(default_factory=list)
    # Placed through the API: where its progress is reported, and which events.
    status_callback: str | None = None
    callback_events: frozenset[str] = frozenset()
    statuses: list[str] = field(default_factory=list)  # every status it had, in order
    callbacks: int = 0  # status callbacks made
    answered_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def params(self, **extra: str) -> dict[str, str]:
        """What Twilio posts to a voice webhook: every parameter of its "request to your
        application", the geography it could not look up left blank."""
        geography = {
            f"{side}{part}": ("US" if part == "Country" else "")
            for side in ("From", "To", "Caller", "Called")
            for part in ("City", "State", "Zip", "Country")
        }
        return {
            "CallSid": self.sid, "AccountSid": self.account_sid, "From": self.from_,
            "To": self.to, "Caller": self.from_, "Called": self.to,
            "CallStatus": self.status, "Direction": self.direction, "ApiVersion": "2010-04-01",
            "CallToken": "", **geography, **extra,
        }  # fmt: skip

    def duration(self) -> int | None:
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0, round((self.ended_at - self.answered_at).total_seconds()))

    def as_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "from": self.from_,
            "to": self.to,
            "direction": self.direction,
            "status": self.status,
            "statuses": self.statuses,
            "transcript": self.transcript,
        }

    def as_twilio(self, base: str) -> dict[str, Any]:
        """The call as Twilio's Calls API shows it."""
        created = format_datetime(self.created_at)
        duration = self.duration()
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": None,
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from_,
            "from_formatted": self.from_,
            "phone_number_sid": None,
            "status": self.status,
            "direction": self.direction,
            "start_time": format_datetime(self.answered_at) if self.answered_at else None,
            "end_time": format_datetime(self.ended_at) if self.ended_at else None,
            "duration": None if duration is None else str(duration),
            "answered_by": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "price": None,
            "price_unit": "USD",
            "api_version": "2010-04-01",
            "date_created": created,
            "date_updated": created,
            "uri": f"{base}/Calls/{self.sid}.json",
            "subresource_uris": {
                "notifications": f"{base}/Calls/{self.sid}/Notifications.json",
                "recordings": f"{base}/Calls/{self.sid}/Recordings.json",
            },
        }


def twilio_error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


class TwilioEmulator:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        sms_webhook_url: str | None = None,
        voice_webhook_url: str | None = None,
        clock: Clock | None = None,
        status_callbacks: bool = True,
        sms_fallback_url: str | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sms_webhook_url = sms_webhook_url
        self.sms_fallback_url = sms_fallback_url
        # Every text a person sent, and whether Parley acknowledged it (fault tests).
        self.inbound: list[dict[str, Any]] = []
        self.voice_webhook_url = voice_webhook_url
        self.calls: dict[str, Call] = {}
        self.clock = clock or SystemClock()
        self.messages: dict[str, EmulatedMessage] = {}
        self.undeliverable: set[str] = set()
        # Numbers that, called, never pick up (no-answer) or are busy.
        self.unanswered: set[str] = set()
        self.busy: set[str] = set()
        self.validator = RequestValidator(auth_token)
        # False: messages still move through their statuses, but nobody is called back.
        self.status_callbacks = status_callbacks
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        base = API.format(account="{account}")
        app.router.add_post(f"{base}/Messages.json", self.create_message)
        app.router.add_get(f"{base}/Messages.json", self.list_messages)
        app.router.add_get(f"{base}/Messages/{{sid}}.json", self.fetch_message)
        app.router.add_post(f"{base}/Calls.json", self.create_call)
        app.router.add_get(f"{base}/Calls.json", self.list_twilio_calls)
        app.router.add_get(f"{base}/Calls/{{sid}}.json", self.fetch_call)
        app.router.add_post("/emulator/sms", self.inbound_sms)
        app.router.add_get("/emulator/messages", self.sent_messages)
        app.router.add_get("/emulator/inbound", self.inbound_texts)
        app.router.add_post("/emulator/call", self.inbound_call)
        app.router.add_post("/emulator/call/{sid}/gather", self.answer_gather)
        app.router.add_get("/emulator/calls", self.list_calls)
        app.on_cleanup.append(self._finish_callbacks)
        return app

    # ------------------------------------------------------------------ Twilio's API

    def _authenticated(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (
            secrets.compare_digest(user, self.account_sid)
            and secrets.compare_digest(password, self.auth_token)
            and request.match_info.get("account") == self.account_sid
        )

    async def create_message(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        form = await request.post()
        to, from_ = str(form.get("To", "")), str(form.get("From", ""))
        body = str(form.get("Body", ""))
        media = [str(url) for url in form.getall("MediaUrl", [])]
        if not _e164(to) or to == INVALID_NUMBER:
            return twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not _e164(from_):
            return twilio_error(400, 21212, f"The 'From' number {from_} is not a valid number.")
        if not body and not media:
            return twilio_error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return twilio_error(
                400, 21617, "The concatenated message body exceeds 1600 characters."
            )
        if to == OPTED_OUT_NUMBER:
            return twilio_error(400, 21610, "Attempt to send to unsubscribed recipient")
        message = EmulatedMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=self.account_sid,
            to=to,
            from_=from_,
            body=body,
            media=media,
            status_callback=str(form["StatusCallback"]) if form.get("StatusCallback") else None,
            created_at=self.clock.now(),
        )
        self.messages[message.sid] = message
        log.info("emulator.message_sent", sid=message.sid, segments=segments(body))
        self._in_background(self._progress(message))
        return web.json_response(message.as_twilio(self._base(request)), status=201)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def fetch_message(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        message = self.messages.get(request.match_info["sid"])
        if message is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(message.as_twilio(self._base(request)))

    async def list_messages(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        to, from_ = request.query.get("To"), request.query.get("From")
        base = self._base(request)
        items = [
            m.as_twilio(base)
            for m in reversed(self.messages.values())
            if (to is None or m.to == to) and (from_ is None or m.from_ == from_)
        ]
        return web.json_response(
            {
                "messages": items,
                "page": 0,
                "page_size": len(items),
                "first_page_uri": f"{base}/Messages.json?PageSize=50&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": f"{base}/Messages.json?PageSize=50&Page=0",
                "start": 0,
                "end": max(len(items) - 1, 0),
            }
        )

    def _base(self, request: web.Request) -> str:
        return API.format(account=request.match_info["account"])

    async def _progress(self, message: EmulatedMessage) -> None:
        """What Twilio reports after accepting a message, one status at a time."""
        steps = (
            ["sent", "undelivered"] if message.to in self.undeliverable else ["sent", "delivered"]
        )
        for status in steps:
            await asyncio.sleep(0.01)
            message.status = status
            message.error_code = 30003 if status == "undelivered" else None
            message.statuses.append(status)
            if message.status_callback and self.status_callbacks:
                params = {
                    "MessageSid": message.sid,
                    "SmsSid": message.sid,
                    "AccountSid": message.account_sid,
                    "From": message.from_,
                    "To": message.to,
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "ApiVersion": "2010-04-01",
                }
                if message.error_code:
                    params["ErrorCode"] = str(message.error_code)
                await self.post_signed(message.status_callback, params)

    async def create_call(self, request: web.Request) -> web.Response:
        """Place a call (`To`, `From`, and `Twiml` or `Url`): it rings, then the person
        picks up (unless the number is `unanswered` or `busy`) and hears the TwiML, as a
        call coming in does; each step is reported to `StatusCallback`, signed, for the
        `StatusCallbackEvent`s asked for (default: `completed`)."""
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        form = await request.post()
        to, from_ = str(form.get("To", "")), str(form.get("From", ""))
        twiml, url = str(form.get("Twiml", "")), str(form.get("Url", ""))
        if not to:
            return twilio_error(400, 21201, "No 'To' number is specified")
        if not _e164(to) or to == INVALID_NUMBER:
            return twilio_error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not _e164(from_):
            return twilio_error(400, 21212, f"Invalid 'From' Phone Number: {from_}")
        if not twiml and not url:
            return twilio_error(400, 21205, "Url parameter is required.")
        asked = {e for v in form.getall("StatusCallbackEvent", []) for e in str(v).split()}
        call = Call(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            from_=from_,
            to=to,
            url=url,  # Twilio takes Url over Twiml when both are given
            created_at=self.clock.now(),
            direction="outbound-api",
            status="queued",
            twiml="" if url else twiml,
            status_callback=str(form["StatusCallback"]) if form.get("StatusCallback") else None,
            callback_events=frozenset(asked & CALL_EVENTS) or frozenset({"completed"}),
            statuses=["queued"],
        )
        self.calls[call.sid] = call
        log.info("emulator.call_placed", sid=call.sid)
        self._in_background(self._place(call))
        return web.json_response(call.as_twilio(self._base(request)), status=201)

    async def fetch_call(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return twilio_error(404, 20404, "The requested resource was not found")
        return web.json_response(call.as_twilio(self._base(request)))

    async def list_twilio_calls(self, request: web.Request) -> web.Response:
        if not self._authenticated(request):
            return twilio_error(401, 20003, "Authenticate")
        to, from_ = request.query.get("To"), request.query.get("From")
        base = self._base(request)
        items = [
            c.as_twilio(base)
            for c in reversed(self.calls.values())
            if (to is None or c.to == to) and (from_ is None or c.from_ == from_)
        ]
        return web.json_response(
            {
                "calls": items,
                "page": 0,
                "page_size": len(items),
                "first_page_uri": f"{base}/Calls.json?PageSize=50&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
                "uri": f"{base}/Calls.json?PageSize=50&Page=0",
                "start": 0,
                "end": max(len(items) - 1, 0),
            }
        )

    async def _place(self, call: Call) -> None:
        """What Twilio does with a call it accepted, one step at a time."""
        for status in ("initiated", "ringing"):
            await asyncio.sleep(0.01)
            await self._report(call, status, status)
        await asyncio.sleep(0.01)
        if call.to in self.unanswered or call.to in self.busy:
            call.ended_at = self.clock.now()
            await self._report(call, "no-answer" if call.to in self.unanswered else "busy")
            log.info("emulator.call_not_answered", sid=call.sid, status=call.status)
            return
        call.answered_at = self.clock.now()
        await self._report(call, "in-progress", "answered")
        said: list[str] = []
        if call.url:
            await self._fetch_and_play(call, call.url, call.params(), said)
            return
        document = _twiml(call.twiml)
        if document is None:
            log.warning("emulator.call_failed", sid=call.sid, reason="invalid TwiML")
            call.status = "failed"
            await self._hung_up(call)
            return
        await self._play(call, list(document), said)

    async def _report(self, call: Call, status: str, event: str = "completed") -> None:
        """The call moves to `status`; its status callback hears of it if it asked for
        `event` (the final status of every call is the `completed` event)."""
        call.status = status
        call.statuses.append(status)
        if call.status_callback is None or event not in call.callback_events:
            return
        params = call.params(
            CallbackSource="call-progress-events",
            SequenceNumber=str(call.callbacks),
            Timestamp=format_datetime(self.clock.now()),
        )
        duration = call.duration()
        if event == "completed" and duration is not None:
            params["CallDuration"] = str(duration)
        call.callbacks += 1
        await self.post_signed(call.status_callback, params)

    async def _hung_up(self, call: Call) -> None:
        """The call has ended (its status says how): a placed call reports it."""
        call.ended_at = self.clock.now()
        await self._report(call, call.status)

    async def settled(self) -> None:
        """Wait until every status callback of the messages sent so far has been made,
        and every call placed so far has been answered (or not)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _finish_callbacks(self, _: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        """One connection pool for every webhook and callback (opened on first use, in
        the app's loop): Twilio keeps its connections too, and a new pool per callback
        would cost the emulator more than the sending it stands in for."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    # ------------------------------------------------------------- playing a person

    async def post_signed(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        """POST `params` form-encoded to `url` with Twilio's signature; the answer.
        The URL is requested exactly as signed (not re-encoded), as Twilio does."""
        signature = self.validator.compute_signature(url, dict(params))
        headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
        target = URL(url, encoded=True)
        # Encoded here as aiohttp's FormData would, which costs it several times more:
        # a tenth of the emulator's CPU when it reports deliveries at 1,000 texts a second.
        form = urlencode(params).encode()
        try:
            async with self._client().post(
                target, data=form, headers=headers, timeout=WEBHOOK_TIMEOUT
            ) as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            log.warning("emulator.webhook_failed", url=url, error=str(error))
            return 0, str(error)

    async def inbound_sms(self, request: web.Request) -> web.Response:
        """Body: {"from": "+1555…", "to": "+1555…", "body": "hi", "media_urls": […]};
        fires the webhook with every parameter Twilio posts, blank ones included."""
        try:
            data = await _json(request)
            from_, to = str(data["from"]), str(data["to"])
            body, media = str(data.get("body", "")), [str(u) for u in data.get("media_urls", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return web.json_response(
                {"error": 'send JSON {"from": "+15551234567", "to": "+15557654321", "body": "hi"}'
                 ' (and "media_urls": [...] for an MMS)'},
                status=400,
            )  # fmt: skip
        if not self.sms_webhook_url:
            return web.json_response({"error": "no SMS webhook URL is configured"}, status=409)
        if not (_e164(from_) and _e164(to)):
            return web.json_response({"error": "from and to must be E.164 numbers"}, status=400)
        if not body and not media:
            return web.json_response({"error": "a text needs a body or media_urls"}, status=400)
        sid = ("MM" if media else "SM") + secrets.token_hex(16)
        params = incoming_message_params(self.account_sid, sid, from_, to, body, media)
        status, answer = await self.post_signed(self.sms_webhook_url, params)
        fallback: int | None = None
        if not 200 <= status < 300 and self.sms_fallback_url:
            # Twilio's error 11200 (HTTP retrieval failure), as its fallback request says.
            failed = {**params, "ErrorCode": "11200", "ErrorUrl": self.sms_webhook_url}
            fallback, answer = await self.post_signed(self.sms_fallback_url, failed)
        acknowledged = 200 <= (fallback or status) < 300
        self.inbound.append(
            {"sid": sid, "from": from_, "to": to, "body": body, "media_urls": media,
             "webhook_status": status, "fallback_status": fallback,
             "acknowledged": acknowledged}
        )  # fmt: skip
        return web.json_response(
            {"sid": sid, "webhook_status": status, "fallback_status": fallback,
             "acknowledged": acknowledged, "webhook_body": answer}
        )  # fmt: skip

    async def inbound_texts(self, request: web.Request) -> web.Response:
        return web.json_response(self.inbound)

    async def sent_messages(self, request: web.Request) -> web.Response:
        base = API.format(account=self.account_sid)
        return web.json_response(
            [
                # Beyond Twilio's fields: the media, and when it arrived to the microsecond.
                {**m.as_twilio(base), "media_urls": m.media, "created_at": m.created_at.isoformat()}
                for m in self.messages.values()
            ]
        )

    # ------------------------------------------------------------ playing a caller

    async def inbound_call(self, request: web.Request) -> web.Response:
        """Body: {"from": "+1555…", "to": "+1555…"}; fires the voice webhook."""
        try:
            data = await _json(request)
            from_, to = str(data["from"]), str(data["to"])
        except (ValueError, KeyError, TypeError):
            return web.json_response(
                {"error": 'send JSON {"from": "+15551234567", "to": "+15557654321"}'}, status=400
            )
        if not self.voice_webhook_url:
            return web.json_response({"error": "no voice webhook URL is configured"}, status=409)
        if not (from_ and _e164(to)):  # `from` may be a hidden number ("Anonymous")
            return web.json_response({"error": "to must be an E.164 number"}, status=400)
        call = Call(
            sid="CA" + secrets.token_hex(16),
            account_sid=self.account_sid,
            from_=from_,
            to=to,
            url=self.voice_webhook_url,
            created_at=self.clock.now(),
        )
        self.calls[call.sid] = call
        log.info("emulator.call_started", sid=call.sid)
        said: list[str] = []
        status = await self._fetch_and_play(call, self.voice_webhook_url, call.params(), said)
        return web.json_response(self._step(call, status, said))

    async def answer_gather(self, request: web.Request) -> web.Response:
        """Body: {"speech": "…"}, {"digits": "1"} or {} (silence)."""
        call = self.calls.get(request.match_info["sid"])
        if call is None:
            return web.json_response({"error": "no such call"}, status=404)
        try:
            data = await _json(request) if request.can_read_body else {}
        except ValueError:
            data = None
        if not isinstance(data, dict) or ("speech" in data and "digits" in data):
            return web.json_response(
                {"error": 'send JSON {"speech": "…"}, {"digits": "1"} or {} for silence'},
                status=400,
            )
        if call.listening is None:
            return web.json_response({"error": f"the call is {call.status}"}, status=409)
        gather, after = call.listening, call.after_gather
        call.listening, call.after_gather = None, []
        action = urljoin(call.url, gather.get("action") or call.url)
        said: list[str] = []
        heard = {"speech": "SpeechResult", "digits": "Digits"}
        given = [(kind, str(data[kind])) for kind in heard if data.get(kind) is not None]
        if given:
            [(kind, text)] = given
            call.transcript.append({"speaker": "caller", "input": kind, "text": text})
            params = call.params(**{heard[kind]: text})
            if kind == "speech":
                params["Confidence"] = "0.92"
            status = await self._fetch_and_play(call, action, params, said)
        else:
            call.transcript.append({"speaker": "caller", "input": "silence", "text": ""})
            if gather.get("actionOnEmptyResult") == "true":
                status = await self._fetch_and_play(call, action, call.params(), said)
            else:
                status = 200
                await self._play(call, after, said)
        return web.json_response(self._step(call, status, said))

    async def list_calls(self, request: web.Request) -> web.Response:
        return web.json_response([call.as_json() for call in self.calls.values()])

    def _step(self, call: Call, status: int, said: list[str]) -> dict[str, Any]:
        return {
            "sid": call.sid,
            "webhook_status": status,
            "twiml": call.twiml,
            "said": said,
            "listening": call.listening,
            "hung_up": call.ended,
            "status": call.status,
        }

    async def _fetch_and_play(
        self, call: Call, url: str, params: Mapping[str, str], said: list[str], hops: int = 0
    ) -> int:
        """POST a signed voice webhook, then play the TwiML it answers; its status.
        A failed webhook, TwiML that is no <Response>, or a redirect loop fails the call."""
        status, body = await self.post_signed(url, params)
        call.url, call.twiml = url, body
        document = _twiml(body) if status == 200 and hops <= MAX_REDIRECTS else None
        if document is None:
            log.warning("emulator.call_failed", sid=call.sid, webhook_status=status)
            call.status = "failed"
            await self._hung_up(call)
            return status
        call.status = "in-progress"
        await self._play(call, list(document), said, hops)
        return status

    async def _play(
        self, call: Call, verbs: list[ET.Element], said: list[str], hops: int = 0
    ) -> None:
        """Run TwiML verbs as Twilio does until the call waits at a <Gather> or ends
        (<Hangup>, <Reject>, or no verbs left). POST only: what Parley's TwiML asks."""
        for index, verb in enumerate(verbs):
            if verb.tag == "Say":
                self._bot_says(call, verb, said)
            elif verb.tag == "Gather":
                for nested in verb.iter("Say"):
                    self._bot_says(call, nested, said)
                call.listening = dict(verb.attrib)
                call.after_gather = verbs[index + 1 :]
                return
            elif verb.tag == "Redirect":
                url = urljoin(call.url, (verb.text or "").strip())
                await self._fetch_and_play(call, url, call.params(), said, hops + 1)
                return
            elif verb.tag in ("Hangup", "Reject"):
                break
        call.status = "completed"
        log.info("emulator.call_ended", sid=call.sid)
        await self._hung_up(call)

    def _bot_says(self, call: Call, say: ET.Element, said: list[str]) -> None:
        text = (say.text or "").strip()
        if text:
            said.append(text)
            call.transcript.append({"speaker": "bot", "input": "speech", "text": text})


def incoming_message_params(
    account_sid: str, sid: str, from_: str, to: str, body: str, media: list[str]
) -> dict[str, str]:
    """What Twilio posts to "A message comes in" for a text or MMS, blank fields
    included (geography Twilio could not look up, an image-only MMS's Body)."""
    return {
        "ToCountry": "US", "ToState": "", "SmsMessageSid": sid, "NumMedia": str(len(media)),
        "ToCity": "", "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received",
        "FromCity": "", "Body": body, "FromCountry": "US", "To": to,
        "MessagingServiceSid": "", "ToZip": "", "NumSegments": str(segments(body) if body else 1),
        "MessageSid": sid, "AccountSid": account_sid, "From": from_, "ApiVersion": "2010-04-01",
        **{f"MediaContentType{i}": _media_type(url) for i, url in enumerate(media)},
        **{f"MediaUrl{i}": url for i, url in enumerate(media)},
    }  # fmt: skip


def _media_type(url: str) -> str:
    return mimetypes.guess_type(url)[0] or "application/octet-stream"


async def _json(request: web.Request) -> Any:
    """The request's JSON body; ValueError for one that is not JSON, or nested past what
    Python's parser can read (a RecursionError would be a 500)."""
    try:
        return await request.json()
    except RecursionError as error:
        raise ValueError("nested too deeply") from error


def _twiml(body: str) -> ET.Element | None:
    """The <Response> of a TwiML document (the webhook's own answer: expat refuses
    entity-expansion attacks), or None."""
    try:
        document = ET.fromstring(body)  # noqa: S314
    except ET.ParseError:
        return None
    return document if document.tag == "Response" else None


def _e164(number: str) -> bool:
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return False
    return number.startswith("+") and phonenumbers.is_possible_number(parsed)
