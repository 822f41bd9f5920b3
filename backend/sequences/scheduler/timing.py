"""When a step may run: the person's time zone, the end of a wait, the end of quiet
hours, and a person's fixed roll for an A/B split. Pure functions of their inputs."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from backend.sequences.definition import WaitUntil, Weekday

WEEKDAYS = list(Weekday)


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


def _at(day: date, moment: time, zone: ZoneInfo) -> datetime:
    """`moment` on `day` in `zone`, in UTC (a time skipped by a DST change is read with
    the offset before the change, i.e. an hour later on the clock)."""
    return datetime.combine(day, moment, tzinfo=zone).astimezone(UTC)


def wait_until(now: datetime, plan: WaitUntil, zone: ZoneInfo) -> datetime:
    """When a wait that starts `now` ends: at least `for`, then the next `until` time of
    day in `zone` on one of the days `on`."""
    earliest = now + (plan.for_ or timedelta())
    if plan.until is None:
        return earliest
    day = earliest.astimezone(zone).date()
    for offset in range(9):
        candidate_day = day + timedelta(days=offset)
        if plan.on and WEEKDAYS[candidate_day.weekday()] not in plan.on:
            continue
        candidate = _at(candidate_day, plan.until, zone)
        # "Until 10:00" at 10:00 means tomorrow's; "for 1d, until 10:00" may end on it.
        if candidate > earliest or (plan.for_ and candidate == earliest):
            return candidate
    raise AssertionError("a weekday comes round within nine days")  # pragma: no cover


def quiet_until(now: datetime, start: time, end: time, zone: ZoneInfo) -> datetime | None:
    """The end of the quiet hours `now` falls in, in UTC; None outside them."""
    local = now.astimezone(zone)
    moment = local.time().replace(tzinfo=None)
    overnight = start > end
    quiet = (moment >= start or moment < end) if overnight else (start <= moment < end)
    if not quiet:
        return None
    day = local.date() + timedelta(days=1) if overnight and moment >= start else local.date()
    return _at(day, end, zone)


def roll_for(profile_id: uuid.UUID, sequence: str, step: str) -> float:
    """A number in [0, 1), the same for one person and step every time."""
    digest = hashlib.sha256(f"{profile_id}:{sequence}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
