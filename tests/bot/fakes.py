"""A fake backend and conversation helpers for unit-testing the dialogue actions.

`FakeBackend` is a `BackendClient` that keeps profiles, identities, the consent ledger,
events, demos and hand-offs in memory, following the real backend's rules where the
actions depend on them (addresses and core fields checked and normalised, texts and
calls from one number are one person, SMS and e-mail marketing need double opt-in, one
live demo per start time, adding someone else's identity merges the two profiles into the older
one, one open hand-off per conversation), refusing what it refuses with the same status
and problem type. tests/bot/test_backend_contract.py runs the same scenarios against
both, so the two cannot drift apart.

It records every call; `down = True` makes every call raise `BackendUnavailable`, and
`reject_bookings` makes `book_demo` raise a chosen `BackendRejected`. Given no `clock`,
it has no "now": no start time is in the past (the actions' tests use fixed dates).
Unlike the real backend, `open_handoff` takes a profile id it does not know.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from email_validator import EmailNotValidError, validate_email
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
from bot.clock import Clock
from tests.bot.conftest import make_tracker

CORE_FIELDS = ("first_name", "last_name", "email", "phone", "locale", "timezone", "company")
KINDS = ("sms", "voice", "email", "web", "alexa")
PHONE_KINDS = ("sms", "voice")  # one number texting and calling is one person
CONCRETE_CHANNELS = ("sms", "voice", "email", "web")
PURPOSES = ("marketing", "transactional")
HANDOFF_REASONS = ("requested", "repeated_failure")
PHONE_REGION = "US"  # the backend's default_phone_region
PROBLEM = "urn:parley:problem:"
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
UTC = timezone.utc
NO_NOW = datetime.min.replace(tzinfo=UTC)


def rejected(status: int, kind: str, detail: str) -> BackendRejected:
    """A refusal with the problem body the real backend sends."""
    problem = {
        "type": PROBLEM + kind,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return BackendRejected(status, problem)


def invalid(pointer: str, detail: str) -> BackendRejected:
    return rejected(422, "invalid-body", f"{pointer}: {detail}")


def phone_number(raw: str, pointer: str) -> str:
    """E.164, as the backend reads numbers: a valid number in any form, or an E.164
    number of a possible length (a fictional 555 number is still someone's)."""
    try:
        number = phonenumbers.parse(raw, PHONE_REGION)
    except phonenumbers.NumberParseException:
        raise invalid(pointer, f"{raw!r} is not a phone number") from None
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    possible = phonenumbers.is_possible_number_with_reason(number)
    if E164.fullmatch(raw) and possible == phonenumbers.ValidationResult.IS_POSSIBLE:
        return raw
    raise invalid(pointer, f"{raw!r} is not a valid phone number")


def email_address(raw: str, pointer: str) -> str:
    try:
        # In lower case, as the backend keeps it (backend.core.identities.normalise_email).
        return str(validate_email(raw, check_deliverability=False).normalized).lower()
    except EmailNotValidError as error:
        raise invalid(pointer, str(error)) from None


def identity_address(kind: str, raw: str, kind_pointer: str) -> str:
    if kind not in KINDS:
        raise invalid(kind_pointer, f"Input should be one of {', '.join(KINDS)}")
    address = raw.strip()
    if not 1 <= len(address) <= 320:
        raise invalid("/address", "should have 1 to 320 characters")
    if kind in PHONE_KINDS:
        return phone_number(address, "/address")
    return email_address(address, "/address") if kind == "email" else address


def core_field(name: str, value: str, pointer: str) -> str:
    if name == "email":
        return email_address(value, pointer)
    if name == "phone":
        return phone_number(value, pointer)
    if name == "timezone":
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise invalid(pointer, f"{value!r} is not an IANA time zone") from None
        return value
    if name == "locale":
        if not LOCALE.match(value):
            raise invalid(pointer, f"{value!r} is not a locale tag such as 'en-US'")
        return value.replace("_", "-")
    text = value.strip()  # names and company
    least, most = (0, 200) if name == "company" else (1, 100)
    if not least <= len(text) <= most:
        raise invalid(pointer, f"should have {least} to {most} characters")
    return text


def split_attributes(attributes: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Core fields (checked and normalised) and free attributes, as identify reads them."""
    if len(attributes) > 100:
        raise invalid("/attributes", "should have at most 100 items")
    fields: dict[str, Any] = {}
    free: dict[str, Any] = {}
    for name, value in attributes.items():
        if not 1 <= len(name) <= 64:
            raise invalid("/attributes", f"{name!r}: a key has 1 to 64 characters")
        if name not in CORE_FIELDS:
            free[name] = value
        elif value is None:
            fields[name] = None
        elif isinstance(value, str):
            fields[name] = core_field(name, value, f"/attributes/{name}")
        else:
            raise invalid(f"/attributes/{name}", "Input should be a valid string")
    return fields, free


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
    updated: int = 0  # when last changed: its values win a merge
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
    action: str  # grant or withdraw
    wording: str
    reply: str
    metadata: dict[str, Any]
    pending: bool
    confirms: bool = False  # confirms the pending double opt-in grant


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
    def __init__(self, clock: Clock | None = None) -> None:
        super().__init__("http://fake-backend.invalid", None, timeout=1)
        self.down = False
        self.reject_bookings: BackendRejected | None = None
        self.calls: list[Call] = []
        self.profiles: dict[str, StoredProfile] = {}
        self.identities: dict[tuple[str, str], str] = {}  # in the order they were added
        self.consent_lines: list[ConsentLine] = []
        self.events: list[RecordedEvent] = []
        self.demos: dict[str, StoredDemo] = {}
        self.handoffs: list[OpenedHandoff] = []
        self._now = clock or (lambda: NO_NOW)
        self._ids = itertools.count(1)
        self._ticks = itertools.count(1)

    # -- seeding and inspecting --------------------------------------------------------

    def add_person(
        self,
        kind: str = "web",
        address: str | None = None,
        attributes: Mapping[str, Any] | None = None,
        identities: Mapping[str, str] | None = None,
    ) -> str:
        """A person the backend already knows, stored as given (unchecked: a time zone
        the bot's tz database lacks can be stored); their profile id."""
        profile = self._new_profile()
        self._add_identity(profile, kind, address or f"seeded-{profile.id}")
        for other_kind, other_address in (identities or {}).items():
            self._add_identity(profile, other_kind, other_address)
        given = attributes or {}
        fields = {k: v for k, v in given.items() if k in CORE_FIELDS}
        self._update(profile, fields, {k: v for k, v in given.items() if k not in fields}, True)
        return profile.id

    def profile_of(self, kind: str, address: str) -> StoredProfile | None:
        """Whose identity this is (a number is the same person on sms and voice)."""
        kinds = PHONE_KINDS if kind in PHONE_KINDS else (kind,)
        owner = next(
            (pid for (k, a), pid in self.identities.items() if a == address and k in kinds), None
        )
        return self._live(owner) if owner else None

    def grant(self, profile_id: str, channel: str, purpose: str = "marketing") -> None:
        """A consent the person gave earlier (SMS and e-mail marketing stay pending until
        confirmed)."""
        self._append_consent(profile_id, channel, purpose, "grant", "(earlier)", "yes", {})

    def confirm(self, profile_id: str, channel: str, purpose: str = "marketing") -> None:
        """The person confirmed a double opt-in (replied YES)."""
        self._append_consent(profile_id, channel, purpose, "confirm", "Reply YES", "YES", {})

    def state(self, profile_id: str, channel: str, purpose: str) -> str:
        return self._fold(profile_id).get((channel, purpose), "none")

    def book(self, profile_id: str, starts_at: datetime, minutes: int = 30) -> str:
        """A demo already booked (by this person or someone else); its id."""
        demo = StoredDemo(
            f"demo-{next(self._ids)}", profile_id, starts_at.astimezone(UTC), minutes, "earlier"
        )
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
        address = identity_address(channel, address, "/channel")
        fields, free = split_attributes(attributes or {})
        profile = self.profile_of(channel, address)
        created = profile is None
        if profile is None:
            profile = self._new_profile()
            self._add_identity(profile, channel, address)
        elif Identity(channel, address) not in profile.identities:
            # Found through the same number on the other phone channel: noted too.
            self._add_identity(profile, channel, address)
        self._update(profile, fields, free, touched=created)
        return Identified(profile.snapshot(), created)

    async def get_profile(self, profile_id: str) -> Profile:
        self._call("get_profile", profile_id=profile_id)
        return self._profile(profile_id).snapshot()

    async def update_profile(self, profile_id: str, attributes: Mapping[str, Any]) -> Profile:
        self._call("update_profile", profile_id=profile_id, attributes=dict(attributes))
        fields, free = split_attributes(attributes)
        profile = self._profile(profile_id)
        self._update(profile, fields, free)
        return profile.snapshot()

    async def add_identity(self, profile_id: str, kind: str, address: str) -> IdentityAdded:
        self._call("add_identity", profile_id=profile_id, kind=kind, address=address)
        address = identity_address(kind, address, "/kind")
        profile = self._profile(profile_id)
        owner = self.profile_of(kind, address)
        if owner is None:
            self._add_identity(profile, kind, address)
            self._update(profile, {}, {}, touched=True)
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
        if not EVENT_TYPE.match(type_):
            raise invalid("/type", f"should match pattern {EVENT_TYPE.pattern!r}")
        if len(properties or {}) > 50:
            raise invalid("/properties", "should have at most 50 items")
        if profile_id not in self.profiles:
            raise invalid("/profile_id", "there is no such profile")
        self.events.append(
            RecordedEvent(self._live(profile_id).id, type_, dict(properties or {}), idempotency_key)
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
        if channel not in (*CONCRETE_CHANNELS, "all") or purpose not in PURPOSES:
            raise invalid("/channel", "no such channel or purpose")
        if action not in ("grant", "withdraw", "confirm"):
            raise invalid("/action", "Input should be 'grant', 'withdraw' or 'confirm'")
        if len(wording) > 2000 or len(reply) > 2000 or len(metadata or {}) > 30:
            raise invalid("/", "wording and reply have at most 2000 characters, metadata 30 keys")
        if not wording or not reply:
            raise invalid("/", "source 'dialogue' needs 'wording' and 'reply'")
        profile = self._profile(profile_id)
        if action != "withdraw" and channel == "all":
            detail = "consent is granted per channel; only a withdrawal may name channel 'all'"
            raise rejected(422, "consent-channel-all", detail)
        if action == "confirm" and not self._awaiting_confirmation(profile.id, channel, purpose):
            detail = f"there is no pending {channel} {purpose} grant to confirm"
            raise rejected(409, "nothing-to-confirm", detail)
        self._append_consent(profile.id, channel, purpose, action, wording, reply, metadata)
        # For channel "all" the backend answers with the state on SMS.
        state = self._consent_state(profile.id, "sms" if channel == "all" else channel, purpose)
        return ConsentState(channel, purpose, state.state, state.allowed)

    async def consent(self, profile_id: str, channel: str, purpose: str) -> ConsentState:
        self._call("consent", profile_id=profile_id, channel=channel, purpose=purpose)
        if channel not in CONCRETE_CHANNELS or purpose not in PURPOSES:
            raise rejected(404, "unknown-consent-kind", "Ask about one channel and purpose.")
        return self._consent_state(self._profile(profile_id).id, channel, purpose)

    async def consent_states(self, profile_id: str) -> list[ChannelConsent]:
        self._call("consent_states", profile_id=profile_id)
        folded = self._fold(self._profile(profile_id).id)
        return [ChannelConsent(c, p, s) for (c, p), s in sorted(folded.items())]

    async def booked_demos(self, start: datetime, end: datetime) -> list[DemoBooking]:
        self._call("booked_demos", start=start, end=end)
        if start.tzinfo is None or end.tzinfo is None:
            raise rejected(400, "invalid-query", "'from' and 'to' must be times with a zone")
        if not start < end or (end - start).days > 92:
            raise rejected(400, "invalid-query", "'to' must be after 'from', at most 92 days later")
        return [d.booking() for d in self.live_demos() if start <= d.starts_at < end]

    async def demos_of(self, profile_id: str) -> list[DemoBooking]:
        """The person's demos that have not started yet."""
        self._call("demos_of", profile_id=profile_id)
        profile = self._profile(profile_id)
        return [
            d.booking()
            for d in self.live_demos()
            if d.profile_id == profile.id and d.starts_at >= self._now()
        ]

    async def book_demo(
        self, profile_id: str, starts_at: datetime, minutes: int, conversation_id: str
    ) -> DemoBooking:
        self._call("book_demo", profile_id=profile_id, starts_at=starts_at, minutes=minutes,
                   conversation_id=conversation_id)  # fmt: skip
        if self.reject_bookings is not None:
            raise self.reject_bookings
        if starts_at.tzinfo is None:
            raise invalid("/starts_at", "Input should have timezone info")
        if not 10 <= minutes <= 180:
            raise invalid("/minutes", "should be from 10 to 180")
        if len(conversation_id) > 200:
            raise invalid("/conversation_id", "should have at most 200 characters")
        if starts_at <= self._now():
            raise invalid("/starts_at", "is in the past")
        profile = self._profile(profile_id)
        self._check_free(starts_at)
        demo = StoredDemo(
            f"demo-{next(self._ids)}",
            profile.id,
            starts_at.astimezone(UTC),
            minutes,
            conversation_id,
        )
        self.demos[demo.id] = demo
        return demo.booking()

    async def move_demo(self, demo_id: str, starts_at: datetime) -> DemoBooking:
        self._call("move_demo", demo_id=demo_id, starts_at=starts_at)
        if starts_at.tzinfo is None:
            raise invalid("/starts_at", "Input should have timezone info")
        demo = self._demo(demo_id)
        if demo.status != "booked":
            raise rejected(409, "demo-cancelled", "This demo was cancelled.")
        self._check_free(starts_at, but=demo_id)
        demo.starts_at = starts_at.astimezone(UTC)
        return demo.booking()

    async def cancel_demo(self, demo_id: str) -> None:
        self._call("cancel_demo", demo_id=demo_id)
        self._demo(demo_id).status = "cancelled"

    async def open_handoff(
        self, conversation_id: str, channel: str, reason: str, profile_id: str | None
    ) -> str:
        """The conversation's open hand-off: opened now if it has none."""
        self._call("open_handoff", conversation_id=conversation_id, channel=channel,
                   reason=reason, profile_id=profile_id)  # fmt: skip
        if reason not in HANDOFF_REASONS:
            raise invalid("/reason", "Input should be 'requested' or 'repeated_failure'")
        if not 1 <= len(conversation_id) <= 200 or not 1 <= len(channel) <= 32:
            raise invalid("/", "conversation_id has 1 to 200 characters, channel 1 to 32")
        if profile_id in self.profiles:
            profile_id = self._live(profile_id).id
        for handoff in self.handoffs:
            if handoff.conversation_id == conversation_id:
                return handoff.id
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
            raise rejected(404, "profile-not-found", f"There is no profile {profile_id!r}.")
        return self._live(profile_id)

    def _demo(self, demo_id: str) -> StoredDemo:
        if demo_id not in self.demos:
            raise rejected(404, "demo-not-found", f"There is no demo {demo_id!r}.")
        return self.demos[demo_id]

    def _add_identity(self, profile: StoredProfile, kind: str, address: str) -> None:
        profile.identities.append(Identity(kind, address))
        self.identities[(kind, address)] = profile.id

    def _update(
        self,
        profile: StoredProfile,
        fields: Mapping[str, Any],
        attributes: Mapping[str, Any],
        touched: bool = False,
    ) -> None:
        """Set core fields and attributes (None removes one); a profile counts as
        changed only when something was set, or `touched`."""
        profile.fields.update(fields)
        for name, value in attributes.items():
            if value is None:
                profile.attributes.pop(name, None)
            else:
                profile.attributes[name] = value
        if fields or attributes or touched:
            profile.updated = next(self._ticks)

    def _merge(self, survivor: StoredProfile, merged: StoredProfile) -> None:
        newer, older = sorted((survivor, merged), key=lambda p: p.updated, reverse=True)
        for name in CORE_FIELDS:
            value = newer.fields.get(name)
            survivor.fields[name] = value if value is not None else older.fields.get(name)
        survivor.attributes = {**older.attributes, **newer.attributes}
        for identity in merged.identities:
            self._add_identity(survivor, identity.kind, identity.address)
        # Consent, events, demos and hand-offs move to the survivor.
        owned: list[ConsentLine | RecordedEvent | StoredDemo | OpenedHandoff] = [
            *self.consent_lines, *self.events, *self.demos.values(), *self.handoffs,
        ]  # fmt: skip
        for item in owned:
            if item.profile_id == merged.id:
                item.profile_id = survivor.id
        merged.fields, merged.attributes, merged.identities = {}, {}, []
        merged.merged_into = survivor.id
        survivor.updated = next(self._ticks)

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
        """A ledger line; `confirm` is a grant confirming the pending double opt-in."""
        confirms = action == "confirm"
        pending = action == "grant" and channel in ("sms", "email") and purpose == "marketing"
        stored = "grant" if confirms else action
        evidence = (wording, reply, dict(metadata or {}))
        self.consent_lines.append(
            ConsentLine(profile_id, channel, purpose, stored, *evidence, pending, confirms)
        )

    def _awaiting_confirmation(self, profile_id: str, channel: str, purpose: str) -> bool:
        """Whether a pending grant still waits for its confirmation (a withdrawal or a
        confirmation since closes it)."""
        waiting = False
        for line in self.consent_lines:
            mine = line.profile_id == profile_id and line.purpose == purpose
            if not mine or line.channel not in (channel, "all"):
                continue
            if line.action == "grant" and line.pending:
                waiting = True
            elif line.action == "withdraw" or line.confirms:
                waiting = False
        return waiting

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
            raise rejected(409, "slot-taken", f"A demo is already booked at {starts_at}.")


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
