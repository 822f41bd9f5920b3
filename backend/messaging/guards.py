"""When a marketing message may reach a person: the guards every door applies at the
moment of delivery, for every channel and every caller.

- **Quiet hours**, in the person's time zone (their profile's, else their phone
  number's, else the business's): no marketing message from `from` until `until`.
- **The frequency cap**: at most `per_24h` marketing messages in any 24 hours and
  `per_7d` in any 7 days to one person, counted over every channel and sender.

The business's rules are `follow_ups:` in `data/business.yml` (`ContactRules`). A
sequence may add its own quiet hours and a lower cap; it never loosens the business's
(`ContactRules.limits`). Transactional, conversational and compliance messages are not
held: they answer something the person did or asked for.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.models import Identity, Message, Profile

DEFAULT_PER_24H = 1
DEFAULT_PER_7D = 3
DEFAULT_QUIET_FROM = time(21, 0)
DEFAULT_QUIET_UNTIL = time(8, 0)
# The longest cap window: marketing messages older than this never count.
CAP_WINDOW = timedelta(days=7)


_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def parse_time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 10:00 as the number 600 (base 60).
        raise ValueError(
            'write times of day in quotes, like "10:00": unquoted, YAML reads them as numbers'
        )
    match = _HHMM.fullmatch(value.strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(
            f'{value!r} is not a time of day: write "HH:MM" on the 24-hour clock, like "09:30"'
        )
    return time(int(match.group(1)), int(match.group(2)))


TimeOfDay = Annotated[time, BeforeValidator(parse_time_of_day)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Caps(_Strict):
    """Marketing messages to one person, counted over every channel and sender."""

    per_24h: Annotated[int, Field(ge=1, le=10)] | None = None
    per_7d: Annotated[int, Field(ge=1, le=50)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Caps:
        if self.per_24h and self.per_7d and self.per_24h > self.per_7d:
            raise ValueError("per_24h cannot be more than per_7d")
        return self


class QuietHours(_Strict):
    """No marketing message from `from` until `until`, in the person's time zone."""

    start: TimeOfDay = Field(alias="from")
    end: TimeOfDay = Field(alias="until")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours from and until are the same time")
        return self


DEFAULT_QUIET = QuietHours(start=DEFAULT_QUIET_FROM, end=DEFAULT_QUIET_UNTIL)


@dataclass(frozen=True)
class Limits:
    """The guards for one message: every quiet window applies, and both caps."""

    quiet: tuple[QuietHours, ...]
    per_24h: int
    per_7d: int


class ContactRules(_Strict):
    """`follow_ups:` in data/business.yml: the business's quiet hours and frequency
    caps, for every marketing message Parley sends (21:00 to 08:00, 1 a day, 3 a week
    when unset)."""

    quiet_hours: QuietHours | None = None
    caps: Caps = Field(default_factory=Caps)

    def limits(self, caps: Caps | None = None, quiet: QuietHours | None = None) -> Limits:
        """The business's limits, tightened by a sequence's own `caps` and
        `quiet_hours` (a lower cap wins; both quiet windows apply)."""
        per_24h = self.caps.per_24h or DEFAULT_PER_24H
        per_7d = self.caps.per_7d or DEFAULT_PER_7D
        if caps is not None:
            per_24h = min(per_24h, caps.per_24h or per_24h)
            per_7d = min(per_7d, caps.per_7d or per_7d)
        windows = [self.quiet_hours or DEFAULT_QUIET]
        if quiet is not None and quiet not in windows:
            windows.append(quiet)
        return Limits(tuple(windows), min(per_24h, per_7d), per_7d)


class HoldReason(StrEnum):
    QUIET_HOURS = "quiet-hours"
    FREQUENCY_CAP = "frequency-cap"


@dataclass(frozen=True)
class Hold:
    """A marketing message may not go before `until`, for `reason`."""

    until: datetime
    reason: HoldReason


def zone_for(profile_timezone: str | None, phone: str | None, business_timezone: str) -> ZoneInfo:
    """The person's time zone: their profile's, else their phone number's country (or
    area), else the business's."""
    if profile_timezone:
        try:
            return ZoneInfo(profile_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    if phone:
        try:
            zones = phone_timezones.time_zones_for_number(phonenumbers.parse(phone))
        except phonenumbers.NumberParseException:
            zones = ()
        known = [z for z in zones if z != "Etc/Unknown"]
        if known:
            try:
                return ZoneInfo(known[0])
            except (ZoneInfoNotFoundError, ValueError):
                pass
    try:
        return ZoneInfo(business_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def at_local(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """`moment` on `day` in `zone`, in UTC (a time skipped by a DST change is read with
    the offset before the change, i.e. an hour later on the clock)."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def quiet_until(now: datetime, start: time, end: time, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet hours `now` falls in, in UTC; None outside them."""
    local = now.astimezone(zone)
    moment = local.time().replace(tzinfo=None)
    overnight = start > end
    quiet = (moment >= start or moment < end) if overnight else (start <= moment < end)
    if not quiet:
        return None
    day = local.date() + timedelta(days=1) if overnight and moment >= start else local.date()
    return at_local(day, end, zone)


def capped_until(sent: Sequence[datetime], at: datetime, limits: Limits) -> datetime | None:
    """When another marketing message may go under the caps, given when the earlier ones
    went (`sent`); None if one may go at `at`."""
    free_at: datetime | None = None
    for window, limit in ((timedelta(days=1), limits.per_24h), (timedelta(days=7), limits.per_7d)):
        recent = sorted((t for t in sent if at - window < t <= at), reverse=True)[:limit]
        if len(recent) >= limit:
            # Free again when the oldest of the last `limit` leaves the window.
            moment = recent[-1] + window + timedelta(minutes=1)
            free_at = moment if free_at is None else max(free_at, moment)
    return free_at


def hold_for(
    now: datetime, zone: ZoneInfo, sent: Sequence[datetime], limits: Limits
) -> Hold | None:
    """Whether a marketing message to this person must wait, and until when: the first
    moment outside every quiet window and under both caps. None: it may go now."""
    at, reason = now, None
    for _ in range(20):  # each round moves forward; a few settle any combination
        moved = False
        for window in limits.quiet:
            end = quiet_until(at, window.start, window.end, zone)
            if end is not None:
                at, moved, reason = end, True, reason or HoldReason.QUIET_HOURS
        free = capped_until(sent, at, limits)
        if free is not None:
            at, moved, reason = free, True, reason or HoldReason.FREQUENCY_CAP
        if not moved:
            break
    return None if reason is None else Hold(at, reason)


async def recent_marketing(
    session: AsyncSession, profile_ids: Iterable[uuid.UUID], now: datetime
) -> dict[uuid.UUID, list[tuple[datetime, str | None]]]:
    """Each person's marketing messages of the last 7 days on every channel (when, and
    its send key): what the caps count. A long text's parts are one message; a failed
    one reached nobody."""
    ids = set(profile_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(Message.profile_id, Message.created_at, Message.send_key).where(
            Message.profile_id.in_(ids),
            Message.direction == "outbound",
            Message.purpose == "marketing",
            Message.part == 1,
            Message.status != "failed",
            Message.created_at > now - CAP_WINDOW,
        )
    )
    found: dict[uuid.UUID, list[tuple[datetime, str | None]]] = {}
    for profile_id, created_at, send_key in rows:
        if profile_id is not None:
            found.setdefault(profile_id, []).append((created_at, send_key))
    return found


@dataclass(frozen=True)
class Wanted:
    """A marketing message a door is about to deliver."""

    profile_id: uuid.UUID
    limits: Limits | None = None  # None: the business's


@dataclass(frozen=True)
class ContactGuard:
    """The guards as the doors apply them, inside the transaction that records the
    message: the people's rows are locked first (on PostgreSQL), so two senders cannot
    both take a person's last place under the cap."""

    rules: ContactRules
    business_timezone: str

    async def check(
        self, session: AsyncSession, wanted: Sequence[Wanted], now: datetime
    ) -> list[Hold | None]:
        """For each message in order, whether it must wait; a message allowed here
        counts against the cap for the ones after it."""
        ids = sorted({w.profile_id for w in wanted})
        if not ids:
            return []
        lock = select(Profile.id, Profile.timezone, Profile.phone).where(Profile.id.in_(ids))
        if session.get_bind().dialect.name == "postgresql":
            lock = lock.order_by(Profile.id).with_for_update()
        people = {pid: (tz, phone) for pid, tz, phone in await session.execute(lock)}
        first_numbers = await session.execute(
            select(Identity.profile_id, func.min(Identity.address))
            .where(Identity.profile_id.in_(ids), Identity.kind == "sms")
            .group_by(Identity.profile_id)
        )
        phones = {pid: number for pid, number in first_numbers}
        sent = {
            pid: [at for at, _ in rows]
            for pid, rows in (await recent_marketing(session, ids, now)).items()
        }
        business = self.rules.limits()
        answers: list[Hold | None] = []
        for item in wanted:
            timezone, phone = people.get(item.profile_id, (None, None))
            zone = zone_for(timezone, phones.get(item.profile_id) or phone, self.business_timezone)
            hold = hold_for(now, zone, sent.get(item.profile_id, []), item.limits or business)
            if hold is None:
                sent.setdefault(item.profile_id, []).append(now)
            answers.append(hold)
        return answers
