"""Requests from Twilio to the backend (delivery and call status callbacks, and texts
Twilio falls back to the backend with): read once, checked, then handled.

Twilio posts a form (`application/x-www-form-urlencoded`) signed with the account's
auth token over the URL it called and every parameter, blank ones included
(`X-Twilio-Signature`). In order:
1. a body over `MAX_BODY_BYTES` is refused (413) before anything is parsed;
2. any other content type is refused (415), so nothing is trusted that the signature
   did not cover;
3. the raw body is parsed as Twilio encodes it, blank values kept;
4. the signature is checked over those parameters and the URL Twilio was given, which
   comes from settings (`PARLEY_PUBLIC_URL`, else the configured host and port), never
   from the request's Host header (403).
The handler gets exactly the parameters the signature covered.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import RequestValidator

from backend.api.keys import SETTINGS
from backend.api.problems import Problem
from backend.core.logs import get_logger

log = get_logger(__name__)

FORM = "application/x-www-form-urlencoded"
# Twilio's requests are a few KiB (a 1,600-character text with ten media URLs is under 8).
MAX_BODY_BYTES = 64 * 1024
MAX_FIELDS = 200

TwilioForm = MultiDictProxy[str]


async def twilio_form(request: web.Request, url: str) -> TwilioForm:
    """The parameters of a request Twilio signed for `url` (plus this request's query);
    else a problem: 413, 415, 400 or 403."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise _too_large()
    if request.content_type != FORM:
        raise Problem(
            415, f"Twilio posts {FORM}, not {request.content_type!r}.",
            type_="unsupported-media-type",
        )  # fmt: skip
    body = await _read_at_most(request, MAX_BODY_BYTES)
    form = parse_form(body)
    if form is None:
        raise Problem(400, "The body is not a form Twilio would send.", type_="invalid-form")
    called = url + (f"?{request.query_string}" if request.query_string else "")
    token = request.app[SETTINGS].twilio_auth_token
    signature = request.headers.get("X-Twilio-Signature", "")
    if (
        token is None
        or not signature
        or not RequestValidator(token.get_secret_value()).validate(called, form, signature)
    ):
        log.warning("twilio.signature_invalid", path=request.path)
        raise Problem(403, "The request is not signed by Twilio.", type_="bad-signature")
    return form


def parse_form(body: bytes) -> TwilioForm | None:
    """A form-encoded body as Twilio sends it (UTF-8, `+` for spaces, blanks kept)."""
    try:
        pairs = parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, errors="strict",
            max_num_fields=MAX_FIELDS,
        )  # fmt: skip
    except ValueError:  # UnicodeDecodeError included
        return None
    return MultiDictProxy(MultiDict(pairs))


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, unless it is longer than `limit` (a chunked body has no length to
    check first): then 413 without reading the rest."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > limit:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> Problem:
    return Problem(
        413, f"Twilio's requests are under {MAX_BODY_BYTES} bytes.", type_="body-too-large"
    )
