"""A fake backend and conversation helpers for unit-testing the dialogue actions.

`FakeBackend` is a `BackendClient` that keeps profiles, identities, the consent ledger,
events, demos and hand-offs in memory, following the real backend's rules where the
actions depend on them (SMS marketing needs double opt-in, one live demo per start time,
adding someone else's identity merges the two profiles into the older one). It records
every call; `down = True` makes every call raise `BackendUnavailable`, and
`reject_bookings` makes `book_demo` raise a chosen `BackendRejected`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.events import EventType

from bot.backend_client import (
    BackendClient,
    BackendRejected,
    BackendUnavailable,
    ChannelConsent,
    ConsentState,
    DemoBooking,
    Identified,
    Identity,
    IdentityAdded,
    Profile,
)
from tests.bot.conftest import make_tracker

CORE_FIELDS = ("first_name", "last_name", "email", "phone", "locale", "timezone", "company")
CONCRETE_CHANNELS = ("sms", "voice", "email", "web")
PURPOSES = ("marketing", "transactional")
TAKEN = {
    "type": "https://parley.example/problems/slot-taken",
    "title": "That time is already booked",
    "status": 409,
}


@dataclass
class Call:
    name: str
    args: dict[str, Any]


@dataclass
class StoredProfile:
    id: str
    order: int  # creation order: the older profile survives a merge
    fields: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    identities: list[Identity] = field(default_factory=list)
    updated: int = 0
    merged_into: str | None = None

    def snapshot(self) -> Profile:
        return Profile(
            id=self.id,
            attributes=dict(self.attributes),
            identities=list(self.identities),
            **{name: self.fields.get(name) for name in CORE_FIELDS},
        )


@dataclass
class ConsentLine:
    profile_id: str
    channel: str
    purpose: str
    action: str
    wording: str
    reply: str
    metadata: dict[str, Any]
    pending: bool


@dataclass
class RecordedEvent:
    profile_id: str
    type: str
    properties: dict[str, Any]
    idempotency_key: str | None


@dataclass
class StoredDemo:
    id: str
    profile_id: str
    starts_at: datetime
    minutes: int
    conversation_id: str
    status: str = "booked"

    def booking(self) -> DemoBooking:
        return DemoBooking(self.id, self.starts_at, self.minutes)


@dataclass
class OpenedHandoff:
    id: str
    conversation_id: str
    channel: str
    reason: str
    profile_id: str | None


class FakeBackend(BackendClient):
    def __init__(self) -> None:
        super().__init__("http://fake-backend.invalid", None, timeout=1)
        self.down = False
        self.reject_bookings: BackendRejected | None = None
        self.calls: list[Call] = []
        self.profiles: dict[str, StoredProfile] = {}
        self.identities: dict[tuple[str, str], str] = {}
        self.consent_lines: list[ConsentLine] = []
        self.events: list[RecordedEvent] = []
        self.demos: dict[str, StoredDemo] = {}
        self.handoffs: list[OpenedHandoff] = []
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)

    # -- seeding and inspecting --------------------------------------------------------

    def add_person(
        self,
        kind: str = "web",
        address: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        identities: Mapping[str, str] | None = None,
    ) -> str:
        """A person the backend already knows; their profile id."""
        profile = self._new_profile()
        self._add_identity(profile, kind, address or f"seeded-{profile.id}")
        for other_kind, other_address in (identities or {}).items():
            self._add_identity(profile, other_kind, other_address)
        self._update(profile, attributes or {})
        return profile.id

    def profile_of(self, kind: str, address: str) -> StoredProfile | None:
        profile_id = self.identities.get((kind, address))
        return self._live(profile_id) if profile_id else None

    def grant(self, profile_id: str, channel: str, purpose: str = "marketing") -> None:
        """A consent the person gave earlier (SMS marketing stays pending until confirmed)."""
        self._append_consent(profile_id, channel, purpose, "grant", "(earlier)", "yes", {})

    def confirm(self, profile_id: str, channel: str, purpose: str = "marketing") -> None:
        """The person confirmed a double opt-in (replied YES)."""
        line = ConsentLine(profile_id, channel, purpose, "grant", "Reply YES", "YES", {}, False)
        self.consent_lines.append(line)

    def state(self, profile_id: str, channel: str, purpose: str) -> str:
        return self._fold(profile_id).get((channel, purpose), "none")

    def book(self, profile_id: str, starts_at: datetime, minutes: int = 30) -> str:
        """A demo already booked (by this person or someone else); its id."""
        demo = StoredDemo(f"demo-{next(self._ids)}", profile_id, starts_at, minutes, "earlier")
        self.demos[demo.id] = demo
        return demo.id

    def live_demos(self) -> list[StoredDemo]:
        return sorted(
            (d for d in self.demos.values() if d.status == "booked"), key=lambda d: d.starts_at
        )

    def called(self, name: str) -> list[dict[str, Any]]:
        """The arguments of every call to `name`, in order."""
        return [call.args for call in self.calls if call.name == name]

    # -- BackendClient ------------------------------------------------------------------

    async def identify(
        self, channel: str, address: str, attributes: Mapping[str, Any] | None = None
    ) -> Identified:
        self._call("identify", channel=channel, address=address, attributes=dict(attributes or {}))
        profile = self.profile_of(channel, address)
        created = profile is None
        if profile is None:
            profile = self._new_profile()
            self._add_identity(profile, channel, address)
        self._update(profile, attributes or {})
        return Identified(profile.snapshot(), created)

    async def get_profile(self, profile_id: str) -> Profile:
        self._call("get_profile", profile_id=profile_id)
        return self._profile(profile_id).snapshot()

    async def update_profile(self, profile_id: str, attributes: Mapping[str, Any]) -> Profile:
        self._call("update_profile", profile_id=profile_id, attributes=dict(attributes))
        profile = self._profile(profile_id)
        self._update(profile, attributes)
        return profile.snapshot()

    async def add_identity(self, profile_id: str, kind: str, address: str) -> IdentityAdded:
        self._call("add_identity", profile_id=profile_id, kind=kind, address=address)
        profile = self._profile(profile_id)
        owner = self.profile_of(kind, address)
        if owner is None:
            self._add_identity(profile, kind, address)
            return IdentityAdded(profile.snapshot(), None)
        if owner.id == profile.id:
            return IdentityAdded(profile.snapshot(), None)
        survivor, merged = sorted((profile, owner), key=lambda p: p.order)
        self._merge(survivor, merged)
        return IdentityAdded(survivor.snapshot(), merged.id)

    async def record_event(
        self,
        profile_id: str,
        type_: str,
        properties: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> None:
        self._call("record_event", profile_id=profile_id, type=type_,
                   properties=dict(properties or {}), idempotency_key=idempotency_key)  # fmt: skip
        profile = self._profile(profile_id)
        self.events.append(
            RecordedEvent(profile.id, type_, dict(properties or {}), idempotency_key)
        )

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
        self._call("record_consent", profile_id=profile_id, channel=channel, purpose=purpose,
                   action=action, wording=wording, reply=reply,
                   metadata=dict(metadata or {}))  # fmt: skip
        profile = self._profile(profile_id)
        if channel not in (*CONCRETE_CHANNELS, "all") or purpose not in PURPOSES:
            raise BackendRejected(422, {"title": "Invalid body", "status": 422})
        if action not in ("grant", "withdraw"):
            raise BackendRejected(422, {"title": "Invalid body", "status": 422})
        if action == "grant" and channel == "all":
            raise BackendRejected(422, {"title": "consent is granted per channel", "status": 422})
        if not wording or not reply:
            raise BackendRejected(422, {"title": "dialogue evidence is required", "status": 422})
        self._append_consent(profile.id, channel, purpose, action, wording, reply, metadata)
        return self._consent_state(profile.id, channel, purpose)

    async def consent(self, profile_id: str, channel: str, purpose: str) -> ConsentState:
        self._call("consent", profile_id=profile_id, channel=channel, purpose=purpose)
        return self._consent_state(self._profile(profile_id).id, channel, purpose)

    async def consent_states(self, profile_id: str) -> list[ChannelConsent]:
        self._call("consent_states", profile_id=profile_id)
        folded = self._fold(self._profile(profile_id).id)
        return [ChannelConsent(c, p, s) for (c, p), s in sorted(folded.items())]

    async def booked_demos(self, start: datetime, end: datetime) -> list[DemoBooking]:
        self._call("booked_demos", start=start, end=end)
        return [d.booking() for d in self.live_demos() if start <= d.starts_at < end]

    async def demos_of(self, profile_id: str) -> list[DemoBooking]:
        self._call("demos_of", profile_id=profile_id)
        profile = self._profile(profile_id)
        return [d.booking() for d in self.live_demos() if d.profile_id == profile.id]

    async def book_demo(
        self, profile_id: str, starts_at: datetime, minutes: int, conversation_id: str
    ) -> DemoBooking:
        self._call("book_demo", profile_id=profile_id, starts_at=starts_at, minutes=minutes,
                   conversation_id=conversation_id)  # fmt: skip
        if self.reject_bookings is not None:
            raise self.reject_bookings
        profile = self._profile(profile_id)
        self._check_free(starts_at)
        demo = StoredDemo(
            f"demo-{next(self._ids)}", profile.id, starts_at, minutes, conversation_id
        )
        self.demos[demo.id] = demo
        return demo.booking()

    async def move_demo(self, demo_id: str, starts_at: datetime) -> DemoBooking:
        self._call("move_demo", demo_id=demo_id, starts_at=starts_at)
        demo = self.demos.get(demo_id)
        if demo is None or demo.status != "booked":
            raise BackendRejected(404, {"title": "No such demo", "status": 404})
        self._check_free(starts_at, but=demo_id)
        demo.starts_at = starts_at
        return demo.booking()

    async def cancel_demo(self, demo_id: str) -> None:
        self._call("cancel_demo", demo_id=demo_id)
        demo = self.demos.get(demo_id)
        if demo is None:
            raise BackendRejected(404, {"title": "No such demo", "status": 404})
        demo.status = "cancelled"

    async def open_handoff(
        self, conversation_id: str, channel: str, reason: str, profile_id: str | None
    ) -> str:
        self._call("open_handoff", conversation_id=conversation_id, channel=channel,
                   reason=reason, profile_id=profile_id)  # fmt: skip
        if reason not in ("requested", "repeated_failure") or not conversation_id:
            raise BackendRejected(422, {"title": "Invalid body", "status": 422})
        handoff = OpenedHandoff(
            f"handoff-{next(self._ids)}", conversation_id, channel, reason, profile_id
        )
        self.handoffs.append(handoff)
        return handoff.id

    async def score(self, profile_id: str) -> float:
        self._call("score", profile_id=profile_id)
        return 0.0

    async def in_segment(self, segment: str, profile_id: str) -> bool:
        self._call("in_segment", segment=segment, profile_id=profile_id)
        return False

    async def close(self) -> None:
        pass

    async def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        raise AssertionError(f"the fake backend got a real request: {method} {path}")

    # -- the fake's own rules -----------------------------------------------------------

    def _call(self, name: str, **args: Any) -> None:
        self.calls.append(Call(name, args))
        if self.down:
            raise BackendUnavailable(f"{name}: the fake backend is down")

    def _new_profile(self) -> StoredProfile:
        number = next(self._ids)
        profile = StoredProfile(id=f"profile-{number}", order=number)
        self.profiles[profile.id] = profile
        return profile

    def _live(self, profile_id: str) -> StoredProfile:
        profile = self.profiles[profile_id]
        while profile.merged_into is not None:
            profile = self.profiles[profile.merged_into]
        return profile

    def _profile(self, profile_id: str) -> StoredProfile:
        if profile_id not in self.profiles:
            raise BackendRejected(404, {"title": f"There is no profile {profile_id}."})
        return self._live(profile_id)

    def _add_identity(self, profile: StoredProfile, kind: str, address: str) -> None:
        profile.identities.append(Identity(kind, address))
        self.identities[(kind, address)] = profile.id

    def _update(self, profile: StoredProfile, attributes: Mapping[str, Any]) -> None:
        for name, value in attributes.items():
            if name in CORE_FIELDS:
                profile.fields[name] = value
            elif value is None:
                profile.attributes.pop(name, None)
            else:
                profile.attributes[name] = value
        profile.updated = next(self._clock)

    def _merge(self, survivor: StoredProfile, merged: StoredProfile) -> None:
        newer, older = sorted((survivor, merged), key=lambda p: p.updated, reverse=True)
        for name in CORE_FIELDS:
            value = newer.fields.get(name)
            survivor.fields[name] = value if value is not None else older.fields.get(name)
        survivor.attributes = {**older.attributes, **newer.attributes}
        for identity in merged.identities:
            self._add_identity(survivor, identity.kind, identity.address)
        for line in self.consent_lines:
            if line.profile_id == merged.id:
                line.profile_id = survivor.id
        for event in self.events:
            if event.profile_id == merged.id:
                event.profile_id = survivor.id
        for demo in self.demos.values():
            if demo.profile_id == merged.id:
                demo.profile_id = survivor.id
        merged.fields, merged.attributes, merged.identities = {}, {}, []
        merged.merged_into = survivor.id

    def _append_consent(
        self,
        profile_id: str,
        channel: str,
        purpose: str,
        action: str,
        wording: str,
        reply: str,
        metadata: Mapping[str, Any] | None,
    ) -> None:
        pending = action == "grant" and channel == "sms" and purpose == "marketing"
        self.consent_lines.append(
            ConsentLine(
                profile_id, channel, purpose, action, wording, reply, dict(metadata or {}), pending
            )
        )

    def _fold(self, profile_id: str) -> dict[tuple[str, str], str]:
        states: dict[tuple[str, str], str] = {}
        for line in self.consent_lines:
            if line.profile_id != profile_id:
                continue
            channels = CONCRETE_CHANNELS if line.channel == "all" else (line.channel,)
            for channel in channels:
                key = (channel, line.purpose)
                if line.action == "withdraw":
                    states[key] = "withdrawn"
                elif not line.pending:
                    states[key] = "granted"
                elif states.get(key) != "granted":
                    states[key] = "pending"
        return states

    def _consent_state(self, profile_id: str, channel: str, purpose: str) -> ConsentState:
        state = self.state(profile_id, channel, purpose)
        allowed = state == "granted" if purpose == "marketing" else state != "withdrawn"
        return ConsentState(channel, purpose, state, allowed)

    def _check_free(self, starts_at: datetime, but: str | None = None) -> None:
        if any(d.starts_at == starts_at and d.id != but for d in self.live_demos()):
            raise BackendRejected(409, TAKEN)


# -- conversations ----------------------------------------------------------------------


def bot_said(text: str) -> dict[str, Any]:
    """An utterance of the bot, as it appears in a tracker's events."""
    return {"event": "bot", "text": text, "data": {}, "metadata": {}}


def person_said(text: str, intent: str = "greet", channel: str = "rest") -> dict[str, Any]:
    """An earlier message of the person, as it appears in a tracker's events."""
    parse_data = {"text": text, "intent": {"name": intent, "confidence": 0.9}, "entities": []}
    return {"event": "user", "text": text, "parse_data": parse_data, "input_channel": channel}


def conversation(
    sender_id: str,
    text: str = "",
    intent: str = "greet",
    entities: list[dict[str, Any]] | None = None,
    channel: str = "rest",
    slots: dict[str, Any] | None = None,
    before: list[dict[str, Any]] | None = None,
) -> Tracker:
    """`make_tracker`, with what was said `before` the latest message in its events."""
    tracker = make_tracker(sender_id, text, intent, entities, channel, slots)
    tracker.events = [*(before or []), *tracker.events]
    return tracker


def entity(name: str, value: str) -> dict[str, Any]:
    return {"entity": name, "value": value}


def slots_of(events: list[EventType]) -> dict[str, Any]:
    """The slots the events set (the last value wins), as a person's next turn sees them."""
    return {e["name"]: e["value"] for e in events if e.get("event") == "slot"}


def fixed_clock(at: datetime) -> Callable[[], datetime]:
    return lambda: at
