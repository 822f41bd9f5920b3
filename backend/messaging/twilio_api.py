"""The `twilio` library's client, async, pointed at Twilio or at the local emulator, and
the two views of it the doors use: texts (`TwilioTexts`) and calls (`TwilioCalls`).

The library always builds `https://api.twilio.com/...` URLs; with an API URL set (the
emulator's), its HTTP client sends the same requests there instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from backend.messaging.door import Accepted

TWILIO_API = "https://api.twilio.com"

# The progress Twilio reports to a call's status callback (`answered` is reported as
# CallStatus `in-progress`).
CALL_EVENTS = ("initiated", "ringing", "answered", "completed")

# The library logs each request's URL, headers and form (phone numbers and message
# bodies) at INFO; Parley keeps full numbers out of info logs.
for name in ("twilio.http_client", "twilio.async_http_client"):
    logging.getLogger(name).setLevel(logging.WARNING)


class TwilioHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The library's async HTTP client, sending to `api_url` instead of Twilio's API
    when one is set (the emulator's)."""

    def __init__(self, api_url: str | None = None, timeout: float | None = None) -> None:
        super().__init__(timeout=timeout)
        self._api_url = api_url.rstrip("/") if api_url else None

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        **kwargs: Any,
    ) -> Response:
        if self._api_url and url.startswith(TWILIO_API):
            url = self._api_url + url[len(TWILIO_API) :]
        # The form encoded here as aiohttp's FormData would (UTF-8, lists repeated),
        # which costs it several times more: 8 % of a scheduler worker's CPU.
        # The library has set the form's Content-Type already.
        body = urlencode(data, doseq=True).encode() if data else None
        return await super().request(method, url, params, body, **kwargs)

    # The library formats its request and response log lines (headers included) even
    # when the logger drops them: about 2 % of a scheduler worker's CPU.
    def log_request(self, kwargs: dict[str, Any]) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log_request(kwargs)

    def log_response(self, status_code: int, response: Any) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            super().log_response(status_code, response)


def twilio_client(
    account_sid: str, auth_token: str, api_url: str | None = None, timeout: float = 10.0
) -> Client:
    """An async-capable client (use the `*_async` methods); close its http_client."""
    api = api_url if api_url and api_url.rstrip("/") != TWILIO_API else None
    http_client = TwilioHttpClient(api, timeout=timeout)
    client = Client(account_sid, auth_token, http_client=http_client)
    # The library imports an API's modules on first use: done now, not in the middle of
    # the first send, where it held the event loop for half a second (every webhook
    # answered meanwhile waited).
    _ = client.messages, client.calls
    return client


@dataclass(frozen=True)
class Listed:
    """A text as Twilio lists it (reconciling a send whose outcome is unknown)."""

    sid: str
    status: str
    body: str
    created_at: datetime | None


class TwilioTexts:
    """Twilio's Messages API through the `twilio` library's async client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def create(
        self, to: str, from_: str, body: str, media_urls: Sequence[str], status_callback: str
    ) -> Accepted:
        options: dict[str, object] = {"media_url": list(media_urls)} if media_urls else {}
        message = await self.client.messages.create_async(
            to=to, from_=from_, body=body, status_callback=status_callback, **options
        )
        return Accepted(sid=str(message.sid), status=str(message.status or "queued"))

    async def recent(self, to: str, from_: str, limit: int = 100) -> list[Listed]:
        """Twilio's record of the latest texts from `from_` to `to`, newest first."""
        found = await self.client.messages.list_async(to=to, from_=from_, limit=limit)
        return [
            Listed(
                sid=str(m.sid), status=str(m.status or "queued"), body=str(m.body or ""),
                created_at=m.date_created,
            )
            for m in found
        ]  # fmt: skip

    async def close(self) -> None:
        http = self.client.http_client
        if hasattr(http, "close"):
            await http.close()


@dataclass(frozen=True)
class ListedCall:
    """A call as Twilio lists it (reconciling a call whose outcome is unknown)."""

    sid: str
    status: str
    created_at: datetime | None


class TwilioCalls:
    """Twilio's Calls API through the `twilio` library's async client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def create(self, to: str, from_: str, twiml: str, status_callback: str) -> Accepted:
        call = await self.client.calls.create_async(
            to=to,
            from_=from_,
            twiml=twiml,
            status_callback=status_callback,
            status_callback_event=list(CALL_EVENTS),
            status_callback_method="POST",
        )
        return Accepted(sid=str(call.sid), status=str(call.status or "queued"))

    async def recent(self, to: str, from_: str, limit: int = 100) -> list[ListedCall]:
        """Twilio's record of the latest calls from `from_` to `to`, newest first."""
        found = await self.client.calls.list_async(to=to, from_=from_, limit=limit)
        return [
            ListedCall(sid=str(c.sid), status=str(c.status or "queued"), created_at=c.date_created)
            for c in found
        ]
