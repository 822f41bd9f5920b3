"""The backend's one client for Rasa's HTTP API (loopback, with Rasa's token): append
events to a person's conversation, such as resuming it after a hand-off or recording a
follow-up text, and read a conversation back (a web chat visitor's history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp


class RasaUnavailable(Exception):
    """Rasa did not take the request; the message says why."""


class RasaClient:
    def __init__(self, base_url: str, token: str | None, timeout: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def append_events(self, conversation_id: str, events: list[dict[str, Any]]) -> None:
        if not self._token:
            raise RasaUnavailable("PARLEY_RASA_TOKEN is not set, so Rasa's API cannot be used")
        url = f"{self._base_url}/conversations/{quote(conversation_id, safe='')}/tracker/events"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as client,
                client.post(url, json=events, params={"token": self._token}) as response,
            ):
                if response.status >= 300:
                    raise RasaUnavailable(f"Rasa answered {response.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RasaUnavailable(f"{type(error).__name__}: {error}") from error

    async def conversation_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The events of a conversation's tracker (since its last restart)."""
        if not self._token:
            raise RasaUnavailable("PARLEY_RASA_TOKEN is not set, so Rasa's API cannot be used")
        url = f"{self._base_url}/conversations/{quote(conversation_id, safe='')}/tracker"
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as client,
                client.get(url, params={"token": self._token}) as response,
            ):
                if response.status >= 300:
                    raise RasaUnavailable(f"Rasa answered {response.status}")
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RasaUnavailable(f"{type(error).__name__}: {error}") from error
        events = body.get("events") if isinstance(body, dict) else None
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    async def resume(self, conversation_id: str) -> None:
        """Let the bot answer again in a paused conversation. The `action_listen` puts
        the tracker back where the bot's rules expect a person's next message."""
        await self.append_events(
            conversation_id, [{"event": "resume"}, {"event": "action", "name": "action_listen"}]
        )

    async def record_follow_up(
        self,
        conversation_id: str,
        text: str,
        asks: str | None,
        at: datetime,
        metadata: dict[str, Any],
    ) -> None:
        """Put a follow-up text in the conversation as the bot's words, with the question
        it asks in the `follow_up` slot (bot/domain/follow_up.yml), before it is sent, so
        the person's answer is read in its light."""
        moment = at.timestamp()
        await self.append_events(
            conversation_id,
            [
                {"event": "action", "name": "action_follow_up", "timestamp": moment},
                {"event": "bot", "text": text, "metadata": metadata, "timestamp": moment},
                {"event": "slot", "name": "follow_up", "value": asks, "timestamp": moment},
                {"event": "action", "name": "action_listen", "timestamp": moment},
            ],
        )
