"""Demo times: the free slots to offer (business hours, minus what is booked), and what
a person means by "tomorrow at 3pm" or "next Tuesday morning" in their time zone."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import dateparser

from bot.business import Business

STEP = timedelta(minutes=30)
# Nobody is offered a demo that starts in less than this.
LEAD_TIME = timedelta(hours=2)
PARTS_OF_DAY = {
    "early morning": "9:00", "morning": "10:00", "noon": "12:00", "midday": "12:00",
    "lunchtime": "12:00", "afternoon": "14:00", "evening": "16:00", "end of day": "16:00",
}  # fmt: skip
HAS_TIME = re.compile(r"\d{1,2}(:\d{2})\b|\b\d{1,2}\s*(am|pm)\b|\b(noon|midday)\b", re.I)


@dataclass(frozen=True)
class Slot:
    starts_at: datetime  # UTC

    def label(self, zone: ZoneInfo) -> str:
        local = self.starts_at.astimezone(zone)
        return f"{local:%a} {local.day} {local:%b}, {local:%H:%M} {local:%Z}"


def candidates(business: Business, now: datetime, days: int | None = None) -> Iterable[Slot]:
    """Every bookable start time in business hours, from now + lead time, in order."""
    zone = business.zone
    local_now = now.astimezone(zone)
    earliest = now + LEAD_TIME
    for offset in range(days or business.demo.book_days_ahead):
        day = (local_now + timedelta(days=offset)).date()
        hours = business.hours_on(day.weekday())
        if hours is None:
            continue
        start = datetime.combine(day, hours[0], tzinfo=zone)
        end = datetime.combine(day, hours[1], tzinfo=zone) - timedelta(
            minutes=business.demo.minutes
        )
        while start <= end:
            if start >= earliest:
                yield Slot(start.astimezone(ZoneInfo("UTC")))
            start += STEP


def offer(
    business: Business, now: datetime, booked: set[datetime], how_many: int = 4
) -> list[Slot]:
    """The first free slot on each of the next open days, up to `how_many`."""
    chosen: list[Slot] = []
    days_seen: set[date] = set()
    for slot in candidates(business, now):
        day = slot.starts_at.astimezone(business.zone).date()
        if day in days_seen or slot.starts_at in booked:
            continue
        chosen.append(slot)
        days_seen.add(day)
        if len(chosen) == how_many:
            break
    return chosen


@dataclass(frozen=True)
class Wanted:
    """What the person asked for: a moment, or just a day."""

    at: datetime | None
    day: date | None


def _afternoon(match: re.Match[str]) -> str:
    hour, minutes = int(match.group(1)), match.group(2) or "00"
    return f"at {hour + 12 if 1 <= hour <= 7 else hour}:{minutes}"


def understand(text: str, now: datetime, zone: ZoneInfo) -> Wanted | None:
    """The time a person means, read in their zone ("next Tuesday morning" included)."""
    cleaned = text.lower().strip()
    cleaned = re.sub(r"\bnext\s+(?=(mon|tue|wed|thu|fri|sat|sun))", "", cleaned)
    for words, clock in sorted(PARTS_OF_DAY.items(), key=lambda item: -len(item[0])):
        cleaned = re.sub(rf"\b(in the |this )?{words}\b", f" {clock}", cleaned)
    # "at 3" is an hour, not a year; without am/pm, 1 to 7 o'clock is afternoon (a demo
    # at 3 means 15:00, not 03:00).
    cleaned = re.sub(
        r"\bat (\d{1,2})(?::(\d{2}))?(?![\d:])(?!\s*(am|pm|a\.m|p\.m))", _afternoon, cleaned
    )
    settings = {
        "PREFER_DATES_FROM": "future",
        "RELATIVE_BASE": now.astimezone(zone).replace(tzinfo=None),
        "TIMEZONE": str(zone),
        "RETURN_AS_TIMEZONE_AWARE": True,
    }
    parsed = dateparser.parse(cleaned, languages=["en"], settings=settings)
    if parsed is None:
        return None
    if HAS_TIME.search(cleaned):
        return Wanted(at=parsed, day=None)
    return Wanted(at=None, day=parsed.date())


def choose(
    wanted: Wanted, business: Business, now: datetime, booked: set[datetime], zone: ZoneInfo
) -> Slot | None:
    """The bookable slot the person asked for, if it is one (or the first free one on
    the day they named)."""
    free = [s for s in candidates(business, now) if s.starts_at not in booked]
    if wanted.at is not None:
        exact = wanted.at.astimezone(ZoneInfo("UTC")).replace(second=0, microsecond=0)
        return next((s for s in free if s.starts_at == exact), None)
    return next((s for s in free if s.starts_at.astimezone(zone).date() == wanted.day), None)
