"""The backend's one client for Rasa's HTTP API (loopback, with Rasa's token): append
events to a person's conversation, such as resuming it after a hand-off or recording a
follow-up text, and read a conversation back (a web chat visitor's history)."""

from __future__ import annotations

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
        # One connection pool for the process, opened on first use (in the app's loop).
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def append_events(
        self,
        conversation_id: str,
        events: list[dict[str, Any]],
        output_channel: str | None = None,
    ) -> list[dict[str, Any]]:
        """Append events; with `output_channel`, the bot's words among them are also sent
        through that channel (Rasa's execute_side_effects). The conversation's events
        as Rasa holds them afterwards."""
        if not self._token:
            raise RasaUnavailable("PARLEY_RASA_TOKEN is not set, so Rasa's API cannot be used")
        url = f"{self._base_url}/conversations/{_in_path(conversation_id)}/tracker/events"
        params = {"token": self._token}
        if output_channel:
            params |= {"output_channel": output_channel, "execute_side_effects": "true"}
        try:
            async with self._client().post(url, json=events, params=params) as response:
                if response.status >= 300:
                    raise RasaUnavailable(f"Rasa answered {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RasaUnavailable(f"{type(error).__name__}: {error}") from error
        held = body.get("events") if isinstance(body, dict) else None
        return [e for e in held if isinstance(e, dict)] if isinstance(held, list) else []

    async def conversation_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The events of a conversation's tracker (since its last restart)."""
        if not self._token:
            raise RasaUnavailable("PARLEY_RASA_TOKEN is not set, so Rasa's API cannot be used")
        url = f"{self._base_url}/conversations/{_in_path(conversation_id)}/tracker"
        try:
            async with self._client().get(url, params={"token": self._token}) as response:
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
        metadata: dict[str, Any],
        output_channel: str | None = None,
    ) -> None:
        """Put a follow-up text in the conversation as the bot's words, with the question
        it asks in the `follow_up` slot (bot/domain/follow_up.yml), before it is sent, so
        the person's answer is read in its light. Rasa stamps the events itself."""
        events: list[dict[str, Any]] = [
            {"event": "action", "name": "action_follow_up"},
            {"event": "bot", "text": text, "metadata": metadata},
            {"event": "slot", "name": "follow_up", "value": asks},
            {"event": "action", "name": "action_listen"},
        ]
        held = await self.append_events(conversation_id, events, output_channel)
        if _session_began_after_ours(held):
            # A new conversation: Rasa started its session during this very call, after
            # stamping our events, and reads a conversation back from its latest session
            # start, so our events would be invisible. Now that it exists, append again
            # (without pushing the text to a web page twice).
            await self.append_events(conversation_id, events)


def _session_began_after_ours(events: list[dict[str, Any]]) -> bool:
    ours = [e.get("timestamp") for e in events if e.get("name") == "action_follow_up"]
    starts = [e.get("timestamp") for e in events if e.get("event") == "session_started"]
    if not ours or not starts or ours[-1] is None:
        return False
    return any(start is not None and start > ours[-1] for start in starts)


def _in_path(conversation_id: str) -> str:
    """The conversation id as a URL path segment. Rasa (Sanic) does not decode `%2B`, so
    the `+` of a phone number (an SMS or voice conversation) is left as it is."""
    return quote(conversation_id, safe="+")
