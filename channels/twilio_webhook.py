"""Is this request really from Twilio? The first check of every Twilio webhook.

Twilio signs each webhook with the account's auth token over the URL it called and the
form it posted (`X-Twilio-Signature`). Behind a proxy the URL Rasa sees is not the one
Twilio called, so the public base URL is a setting (`PARLEY_PUBLIC_URL`).
"""

from __future__ import annotations

from sanic.request import Request
from twilio.request_validator import RequestValidator


def called_url(request: Request, public_url: str | None) -> str:
    """The URL Twilio called: the public base URL (if set) with this request's path."""
    if not public_url:
        return str(request.url)
    query = f"?{request.query_string}" if request.query_string else ""
    return public_url.rstrip("/") + request.path + query


def signed_by_twilio(request: Request, auth_token: str, public_url: str | None) -> bool:
    signature = request.headers.get("X-Twilio-Signature")
    if not signature or not auth_token:
        return False
    form = (
        request.form if request.content_type.startswith("application/x-www-form-urlencoded") else {}
    )
    return bool(
        RequestValidator(auth_token).validate(called_url(request, public_url), form, signature)
    )
