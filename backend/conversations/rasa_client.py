"""The backend's one client for Rasa's HTTP API (loopback, with Rasa's token): append
events to a person's conversation, such as resuming it after a hand-off or recording a
follow-up text, read a conversation back (a web chat visitor's history, an export),
erase one, and delete what is older than the retention period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp


class RasaUnavailable(Exception):
    """Rasa did not take the request; the message says why, `status` what Rasa answered
    (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
        params = {"token": self._require_token()}
        if output_channel:
            params |= {"output_channel": output_channel, "execute_side_effects": "true"}
        path = f"/conversations/{_in_path(conversation_id)}/tracker/events"
        body = await self._call("POST", path, events, params=params)
        held = body.get("events")
        return [e for e in held if isinstance(e, dict)] if isinstance(held, list) else []

    async def conversation_events(self, conversation_id: str) -> list[dict[str, Any]]:
        """The events of a conversation's tracker (all sessions, since its last restart),
        read once a turn in progress is saved (channels.conversation_batch in the bot):
        what a visitor's other tab already shows is in it."""
        path = f"/webhooks/conversations/{_in_path(conversation_id)}/tracker"
        body = await self._call("GET", path, headers=self._bearer())
        events = body.get("events")
        return [e for e in events if isinstance(e, dict)] if isinstance(events, list) else []

    async def erase_conversation(self, conversation_id: str) -> int:
        """Erase a conversation from Rasa's tracker store, every session of it
        (channels.conversation_batch in the bot); how many events were deleted."""
        path = f"/webhooks/conversations/{_in_path(conversation_id)}"
        answer = await self._call("DELETE", path, headers=self._bearer())
        return int(answer.get("erased") or 0)

    async def delete_older_than(self, before: datetime, limit: int) -> tuple[int, bool]:
        """Delete at most `limit` events older than `before` from Rasa's tracker store;
        how many, and whether there may be more."""
        answer = await self._call(
            "POST", "/webhooks/conversations/retention",
            {"before": before.timestamp(), "limit": limit}, headers=self._bearer(),
        )  # fmt: skip
        return int(answer.get("deleted") or 0), bool(answer.get("more"))

    @property
    def configured(self) -> bool:
        """Whether Rasa's token is set (without it, none of Rasa's API can be used)."""
        return bool(self._token)

    async def resume(self, conversation_id: str) -> None:
        """Let the bot answer again in a paused conversation. The `action_listen` puts
        the tracker back where the bot's rules expect a person's next message."""
        await self.append_events(
            conversation_id, [{"event": "resume"}, {"event": "action", "name": "action_listen"}]
        )

    async def append_to_many(self, batch: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
        """Append events to many conversations in one request (channels.conversation_batch
        in the bot); the conversations Rasa could not append to, with why. Raises
        `RasaUnavailable` if the request as a whole failed."""
        body = {"conversations": [{"conversation_id": c, "events": e} for c, e in batch.items()]}
        answer = await self._call(
            "POST", "/webhooks/conversations/append", body, headers=self._bearer()
        )
        appended = set(answer.get("appended") or [])
        return {c: "Rasa did not say it appended them" for c in batch if c not in appended} | {
            str(f.get("conversation_id")): str(f.get("error"))
            for f in answer.get("failed") or []
            if isinstance(f, dict)
        }

    async def answer_text(self, text: dict[str, Any], timeout: float) -> str:
        """Hand a text a person sent to the bot's SMS channel (channels/sms.py), which
        runs the bot's turn unless the text is in the conversation already; waits up to
        `timeout` seconds for the turn to end. "now" or "before": when it was answered."""
        answer = await self._call(
            "POST", "/webhooks/sms/turn", text, headers=self._bearer(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )  # fmt: skip
        return str(answer.get("answered", ""))

    def _bearer(self) -> dict[str, str]:
        """Rasa's token as the bot's own endpoints take it (channels.conversation_batch)."""
        return {"Authorization": f"Bearer {self._require_token()}"}

    def _require_token(self) -> str:
        if not self._token:
            raise RasaUnavailable("PARLEY_RASA_TOKEN is not set, so Rasa's API cannot be used")
        return self._token

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> dict[str, Any]:
        """Rasa's JSON answer (an empty one if it is not an object); `RasaUnavailable`
        if Rasa could not be reached or did not answer 2xx."""
        url = f"{self._base_url}{path}"
        try:
            async with self._client().request(
                method, url, json=body, params=params, headers=headers,
                timeout=timeout or self._timeout,
            ) as response:  # fmt: skip
                if response.status >= 300:
                    raise RasaUnavailable(f"Rasa answered {response.status}", response.status)
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise RasaUnavailable(f"{type(error).__name__}: {error}") from error
        return answer if isinstance(answer, dict) else {}

    async def record_follow_ups(self, follow_ups: list[FollowUpRecord]) -> dict[str, str]:
        """Record many follow-ups at once, each as `record_follow_up` does (without
        pushing them to a web page); the conversations that failed, with why."""
        batch: dict[str, list[dict[str, Any]]] = {}
        for item in follow_ups:
            batch.setdefault(item.conversation_id, []).extend(
                follow_up_events(item.text, item.asks, item.metadata)
            )
        return await self.append_to_many(batch)

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
        events = follow_up_events(text, asks, metadata)
        held = await self.append_events(conversation_id, events, output_channel)
        if _session_began_after_ours(held):
            # A new conversation: Rasa started its session during this very call, after
            # stamping our events, and reads a conversation back from its latest session
            # start, so our events would be invisible. Now that it exists, append again
            # (without pushing the text to a web page twice).
            await self.append_events(conversation_id, events)


@dataclass(frozen=True)
class FollowUpRecord:
    conversation_id: str
    text: str
    asks: str | None
    metadata: dict[str, Any]


def follow_up_events(text: str, asks: str | None, metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """A follow-up in a conversation: the bot's words, after an action of its own, with
    the question it asks in the `follow_up` slot; then the bot listens."""
    return [
        {"event": "action", "name": "action_follow_up"},
        {"event": "bot", "text": text, "metadata": metadata},
        {"event": "slot", "name": "follow_up", "value": asks},
        {"event": "action", "name": "action_listen"},
    ]


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
