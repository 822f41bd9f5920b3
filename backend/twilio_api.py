"""The `twilio` library's client, async, pointed at Twilio or at the local emulator.

The library always builds `https://api.twilio.com/...` URLs; with an API URL set (the
emulator's), its HTTP client sends the same requests there instead.
"""

from __future__ import annotations

import logging
from typing import Any

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

TWILIO_API = "https://api.twilio.com"

# The library logs each request's URL, headers and form (phone numbers and message
# bodies) at INFO; Parley keeps full numbers out of info logs.
logging.getLogger("twilio.http_client").setLevel(logging.WARNING)


class RedirectedHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    def __init__(self, api_url: str, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self._api_url = api_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self._api_url + url[len(TWILIO_API) :]
        return await super().request(method, url, *args, **kwargs)


def twilio_client(
    account_sid: str, auth_token: str, api_url: str | None = None, timeout: float = 10.0
) -> Client:
    """An async-capable client (use the `*_async` methods); close its http_client."""
    http_client = (
        RedirectedHttpClient(api_url, timeout=timeout)
        if api_url and api_url.rstrip("/") != TWILIO_API
        else AsyncTwilioHttpClient(timeout=timeout)
    )
    return Client(account_sid, auth_token, http_client=http_client)
