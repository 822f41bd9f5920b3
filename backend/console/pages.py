"""What every console page shares: the request's user and CSRF token, the templates
and their filters, rendering with the console's security headers, and a conversation's
lines read from Rasa."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import phonenumbers
from aiohttp import web

from backend.api.keys import RASA
from backend.conversations.rasa_client import RasaUnavailable
from backend.conversations.transcripts import Line, transcript
from backend.core.logs import get_logger
from backend.core.models import ConsoleUser

log = get_logger(__name__)

HERE = Path(__file__).parent
USER = web.RequestKey("console_user", ConsoleUser)
CSRF = web.RequestKey("console_csrf", str)
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
    )  # fmt: skip
    environment.filters.update(waited=_waited, phone=_phone, when=_when)
    return environment


def render(
    request: web.Request, template: str, http_status: int = 200, **context: Any
) -> web.Response:
    user = request.get(USER)
    page = request.config_dict[TEMPLATES].get_template(template)
    html = page.render(user=user, csrf=request.get(CSRF, ""), **context)
    return web.Response(
        text=html, status=http_status, content_type="text/html",
        headers={
            "Cache-Control": "no-store",
            # Scripts and styles only from the console itself; no framing (clickjacking).
            "Content-Security-Policy": (
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )  # fmt: skip


async def conversation_lines(request: web.Request, conversation_id: str) -> list[Line] | None:
    """The conversation's lines, or None if Rasa cannot be read now."""
    try:
        return transcript(await request.config_dict[RASA].conversation_events(conversation_id))
    except RasaUnavailable as error:
        log.warning("console.transcript_unavailable", error=str(error))
        return None


def _waited(delta: Any) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"


def _phone(address: str) -> str:
    try:
        number = phonenumbers.parse(address)
    except phonenumbers.NumberParseException:
        return address
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S}" if at else ""
