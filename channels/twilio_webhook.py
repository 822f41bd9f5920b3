"""Is this request really from Twilio? The first step of every Twilio webhook.

Twilio posts a form (`application/x-www-form-urlencoded`) and signs it with the
account's auth token over the URL it called and every parameter it posted, blank ones
included (`X-Twilio-Signature`). `twilio_form` reads the raw body once, in this order:

1. a body over `MAX_BODY_BYTES` is refused with 413 before anything is parsed (Twilio's
   requests are a few KiB; a 1,600-character text with ten media URLs is under 8 KiB);
2. any other content type gets 415: the handler never sees a form Sanic parsed from
   something the signature did not cover (multipart, JSON);
3. the body is parsed as Twilio encodes it, blank values kept;
4. the signature is checked over exactly those parameters and the URL Twilio called,
   which comes from settings (`PARLEY_PUBLIC_URL`, else the configured host and port)
   plus this request's path and query, never from the request's Host header: 403.

The handler gets the same parameters the signature covered, and nothing else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl

from multidict import MultiDict
from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse
from twilio.request_validator import RequestValidator

logger = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
MAX_BODY_BYTES = 64 * 1024
# A form with more fields than this is not one Twilio sent (an MMS has about 40).
MAX_FIELDS = 200


@dataclass(frozen=True)
class Refusal:
    """Why a request is not a Twilio webhook: its status and a short reason."""

    status: int
    reason: str

    def as_text(self) -> HTTPResponse:
        return response.text(self.reason, status=self.status)


TwilioForm = MultiDict[str]


def called_url(request: Request, base_url: str) -> str:
    """The URL Twilio called: the configured base URL with this request's path and query
    (as sent, undecoded: Twilio signs the URL exactly as it requested it)."""
    query = f"?{request.query_string}" if request.query_string else ""
    return base_url.rstrip("/") + request.path + query


def twilio_form(request: Request, auth_token: str, base_url: str) -> TwilioForm | Refusal:
    """The parameters Twilio posted, if this request is a webhook Twilio signed for
    `base_url`; else why not."""
    length = request.headers.get("content-length", "")
    if (length.isdigit() and int(length) > MAX_BODY_BYTES) or len(request.body) > MAX_BODY_BYTES:
        return Refusal(413, f"Payload too large: Twilio's requests are under {MAX_BODY_BYTES} B")
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM:
        return Refusal(415, f"Unsupported media type: Twilio posts {FORM}")
    form = parse_form(request.body)
    if form is None:
        return Refusal(400, "Bad request: the body is not a form Twilio would send")
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not auth_token:
        return Refusal(403, "Forbidden: not signed by Twilio")
    if not RequestValidator(auth_token).validate(called_url(request, base_url), form, signature):
        return Refusal(403, "Forbidden: not signed by Twilio")
    return form


def parse_form(body: bytes) -> TwilioForm | None:
    """A form-encoded body as Twilio sends it (UTF-8, `+` for spaces, blanks kept)."""
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return None
    return MultiDict(pairs)
