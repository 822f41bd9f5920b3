"""The one typed HTTP client the actions use to reach Parley's backend.

Every call has a timeout. Failures come out as two exceptions an action can answer
politely: `BackendUnavailable` (down, slow, 5xx) and `BackendRejected` (a 4xx problem).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.settings import settings


class BackendError(Exception):
    """The backend could not do what was asked."""


class BackendUnavailable(BackendError):
    """The backend did not answer in time, or failed on its side."""


class BackendRejected(BackendError):
    """The backend refused the request (4xx); `problem` is its RFC 9457 body."""

    def __init__(self, status: int, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status}: {problem.get('detail') or problem.get('title')}")
        self.status = status
        self.problem = dict(problem)


@dataclass(frozen=True)
class Identity:
    kind: str
    address: str


@dataclass(frozen=True)
class Profile:
    id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    company: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(
            id=str(data["id"]),
            first_name=data.get("first_name"),
            last_name=data.get("last_name"),
            email=data.get("email"),
            phone=data.get("phone"),
            locale=data.get("locale"),
            timezone=data.get("timezone"),
            company=data.get("company"),
            attributes=dict(data.get("attributes") or {}),
            identities=[Identity(i["kind"], i["address"]) for i in data.get("identities", [])],
        )


@dataclass(frozen=True)
class IdentifiedEvent:
    """Something a person did, naming them by a channel identity (a profile is created
    for an identity the backend does not know yet)."""

    type: str
    kind: str  # identity kind: sms, voice, web, alexa, email
    address: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    occurred_at: datetime | None = None
    # The backend stores an event sent again with the same key once.
    idempotency_key: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "identity": {"kind": self.kind, "address": self.address},
            "properties": dict(self.properties),
        }
        if self.occurred_at is not None:
            body["occurred_at"] = self.occurred_at.isoformat()
        if self.idempotency_key:
            body["idempotency_key"] = self.idempotency_key
        return body


@dataclass(frozen=True)
class TextReceipt:
    message_id: int
    profile_id: str | None  # None: a number new to Parley (its profile comes with the answer)
    duplicate: bool  # the same MessageSid was handed over before
    keyword: str | None  # stop, start or help
    handled: bool  # a keyword the backend answered: not for the bot


@dataclass(frozen=True)
class Identified:
    profile: Profile
    created: bool


@dataclass(frozen=True)
class DemoBooking:
    id: str
    starts_at: datetime
    minutes: int


@dataclass(frozen=True)
class ChannelConsent:
    channel: str
    purpose: str
    state: str  # granted, withdrawn, pending or none


@dataclass(frozen=True)
class ConsentState(ChannelConsent):
    """Whether a message of `purpose` may go to the person on `channel` now."""

    allowed: bool


@dataclass(frozen=True)
class IdentityAdded:
    profile: Profile
    # When the identity was someone else's, the two were one person and got merged.
    merged_away: str | None


class BackendClient:
    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self._base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def identify(
        self, channel: str, address: str, attributes: Mapping[str, Any] | None = None
    ) -> Identified:
        """The profile behind a channel identity (created if new), updated with `attributes`."""
        body = {"channel": channel, "address": address, "attributes": dict(attributes or {})}
        data = await self._request("POST", "/api/v1/identify", body)
        return Identified(Profile.from_json(data["profile"]), bool(data["created"]))

    async def get_profile(self, profile_id: str) -> Profile:
        return Profile.from_json(await self._request("GET", f"/api/v1/profiles/{profile_id}"))

    async def update_profile(self, profile_id: str, attributes: Mapping[str, Any]) -> Profile:
        """Set core fields and attributes (same meaning as in identify)."""
        data = await self._request(
            "PATCH", f"/api/v1/profiles/{profile_id}", {"attributes": dict(attributes)}
        )
        return Profile.from_json(data)

    async def add_identity(self, profile_id: str, kind: str, address: str) -> IdentityAdded:
        """Give the person another identity (merging profiles if it was someone else's)."""
        data = await self._request(
            "POST", f"/api/v1/profiles/{profile_id}/identities", {"kind": kind, "address": address}
        )
        return IdentityAdded(Profile.from_json(data["profile"]), data.get("merged_away"))

    async def record_event(
        self,
        profile_id: str,
        type_: str,
        properties: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        """Report something the person did in the conversation (scored by the backend)."""
        body: dict[str, Any] = {
            "type": type_,
            "profile_id": profile_id,
            "properties": dict(properties or {}),
        }
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        await self._request("POST", "/api/v1/events", body)

    async def record_events(self, events: Sequence[IdentifiedEvent]) -> int:
        """Report up to 1,000 events at once (stored all together or not at all); how
        many were new (the rest were duplicates of an idempotency key)."""
        data = await self._request(
            "POST", "/api/v1/events", {"events": [event.as_json() for event in events]}
        )
        return int(data["stored"])

    async def record_consent(
        self,
        profile_id: str,
        channel: str,
        purpose: str,
        action: str,
        wording: str,
        reply: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> ConsentState:
        """Append to the consent ledger what the bot asked and what the person answered."""
        data = await self._request(
            "POST",
            f"/api/v1/profiles/{profile_id}/consent",
            {
                "channel": channel,
                "purpose": purpose,
                "action": action,
                "source": "dialogue",
                "wording": wording,
                "reply": reply,
                "metadata": dict(metadata or {}),
            },
        )
        return ConsentState(channel, purpose, data["state"], bool(data["allowed"]))

    async def consent(self, profile_id: str, channel: str, purpose: str) -> ConsentState:
        path = f"/api/v1/profiles/{profile_id}/consent/{channel}/{purpose}"
        data = await self._request("GET", path)
        return ConsentState(channel, purpose, data["state"], bool(data["allowed"]))

    async def consent_states(self, profile_id: str) -> list[ChannelConsent]:
        """Every channel and purpose the ledger says anything about, with today's state."""
        data = await self._request("GET", f"/api/v1/profiles/{profile_id}/consent")
        return [ChannelConsent(s["channel"], s["purpose"], s["state"]) for s in data["states"]]

    async def booked_demos(self, start: datetime, end: datetime) -> list[DemoBooking]:
        data = await self._request(
            "GET", f"/api/v1/demos?from={quote(start.isoformat())}&to={quote(end.isoformat())}"
        )
        return [_demo(item) for item in data["items"]]

    async def demos_of(self, profile_id: str) -> list[DemoBooking]:
        data = await self._request("GET", f"/api/v1/profiles/{profile_id}/demos")
        return [_demo(item) for item in data["items"]]

    async def book_demo(
        self, profile_id: str, starts_at: datetime, minutes: int, conversation_id: str
    ) -> DemoBooking:
        """Book a slot; BackendRejected with status 409 if someone else has it."""
        body = {
            "profile_id": profile_id,
            "starts_at": starts_at.isoformat(),
            "minutes": minutes,
            "conversation_id": conversation_id,
        }
        return _demo(await self._request("POST", "/api/v1/demos", body))

    async def move_demo(self, demo_id: str, starts_at: datetime) -> DemoBooking:
        body = {"starts_at": starts_at.isoformat()}
        return _demo(await self._request("PATCH", f"/api/v1/demos/{demo_id}", body))

    async def cancel_demo(self, demo_id: str) -> None:
        await self._request("DELETE", f"/api/v1/demos/{demo_id}")

    async def open_handoff(
        self, conversation_id: str, channel: str, reason: str, profile_id: str | None
    ) -> str:
        """Mark the conversation for a person; the hand-off's id."""
        body: dict[str, Any] = {
            "conversation_id": conversation_id,
            "channel": channel,
            "reason": reason,
        }
        if profile_id:
            body["profile_id"] = profile_id
        return str((await self._request("POST", "/api/v1/handoffs", body))["id"])

    async def score(self, profile_id: str) -> float:
        return float((await self._request("GET", f"/api/v1/profiles/{profile_id}/score"))["score"])

    async def in_segment(self, segment: str, profile_id: str) -> bool:
        data = await self._request("GET", f"/api/v1/segments/{segment}/members/{profile_id}")
        return bool(data["member"])

    async def receive_text(
        self, sid: str, sender: str, to: str, body: str, media_urls: list[str],
        opt_out_type: str | None, timeout: float | None = None,
    ) -> TextReceipt:  # fmt: skip
        """Hand a text a person sent to the backend: recorded once, keywords applied,
        and answered later by the backend (backend.messaging.text_turns)."""
        payload: dict[str, Any] = {"sid": sid, "from": sender, "to": to, "body": body}
        if media_urls:
            payload["media_urls"] = media_urls
        if opt_out_type:
            payload["opt_out_type"] = opt_out_type
        data = await self._request("POST", "/api/v1/inbound-texts", payload, timeout)
        return TextReceipt(
            message_id=int(data["message_id"]),
            profile_id=str(data["profile_id"]) if data.get("profile_id") else None,
            duplicate=bool(data["duplicate"]),
            keyword=data.get("keyword"),
            handled=bool(data["handled"]),
        )

    async def send_text(
        self, to: str, body: str, purpose: str, media_urls: list[str] | None = None,
        in_reply_to: int | None = None, send_key: str | None = None,
    ) -> list[int]:  # fmt: skip
        """Send a text through the backend's one door; the ids of the parts sent. The same
        `send_key` again is the same send: never sent twice."""
        payload: dict[str, Any] = {"to": to, "body": body, "purpose": purpose}
        if media_urls:
            payload["media_urls"] = media_urls
        if in_reply_to is not None:
            payload["in_reply_to"] = in_reply_to
        if send_key is not None:
            payload["send_key"] = send_key
        data = await self._request("POST", "/api/v1/messages", payload)
        return [int(m["id"]) for m in data["messages"]]

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        limit = aiohttp.ClientTimeout(total=timeout) if timeout is not None else self._timeout
        try:
            async with self._session.request(
                method, self._base_url + path, json=body, timeout=limit
            ) as resp:
                if resp.status >= 500:
                    raise BackendUnavailable(f"{method} {path} answered {resp.status}")
                payload = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise BackendRejected(resp.status, payload if isinstance(payload, dict) else {})
                if not isinstance(payload, dict):
                    raise BackendUnavailable(f"{method} {path} answered with no JSON object")
                return payload
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            raise BackendUnavailable(f"{method} {path}: {type(error).__name__}: {error}") from error


def _demo(data: Mapping[str, Any]) -> DemoBooking:
    return DemoBooking(
        id=str(data["id"]),
        starts_at=datetime.fromisoformat(str(data["starts_at"]).replace("Z", "+00:00")),
        minutes=int(data["minutes"]),
    )


_shared: BackendClient | None = None


def shared_client() -> BackendClient:
    """The action server's client, configured from settings on first use."""
    global _shared
    if _shared is None:
        config = settings()
        token = config.backend_token.get_secret_value() if config.backend_token else None
        _shared = BackendClient(config.backend_url, token, config.backend_timeout)
    return _shared
