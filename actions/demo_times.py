"""Demo times: the free slots to offer (business hours, minus what is booked), what a
person means by "tomorrow at 3pm" or "next Tuesday morning" in their time zone, and the
stretch of time they ask for a demo in ("next week", "sometime in January", "Thursday
afternoon")."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
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


def offer_for(
    period: Period,
    business: Business,
    now: datetime,
    booked: set[datetime],
    zone: ZoneInfo,
    how_many: int = 4,
) -> tuple[str, list[Slot]]:
    """What to offer a person who asked for `period` (in their zone): free times within
    it (`period`: the first on each of its days, then, for a short period, more at
    least an hour apart); else the first free ones from its start on, one a day, or
    the last ones before it when none is left after it (`nearest`); or nothing when it
    starts further ahead than demos can be booked (`too_far`)."""
    last_day = now.astimezone(zone).date() + timedelta(days=business.demo.book_days_ahead - 1)
    if period.first > last_day:
        return "too_far", []
    free = [s for s in candidates(business, now) if s.starts_at not in booked]
    within = [s for s in free if period.holds(s, zone)]
    if within:
        return "period", _spread(within, zone, how_many)
    start = datetime.combine(period.first, period.hours[0] if period.hours else time(0))
    later = [s for s in free if s.starts_at >= start.replace(tzinfo=zone)]
    return "nearest", _spread(later or free[::-1], zone, how_many, one_a_day=True)


def _spread(free: list[Slot], zone: ZoneInfo, how_many: int, one_a_day: bool = False) -> list[Slot]:
    """Up to `how_many` of the `free` times: the first of each day (in the person's
    zone), then more, at least an hour from those chosen; in order."""
    chosen: list[Slot] = []
    days: set[date] = set()
    for slot in free:
        day = slot.starts_at.astimezone(zone).date()
        if day not in days and len(chosen) < how_many:
            chosen.append(slot)
            days.add(day)
    for slot in [] if one_a_day else free:
        if len(chosen) == how_many:
            break
        if all(abs(slot.starts_at - c.starts_at) >= timedelta(hours=1) for c in chosen):
            chosen.append(slot)
    return sorted(chosen, key=lambda s: s.starts_at)


@dataclass(frozen=True)
class Wanted:
    """What the person asked for: a moment, or just a day."""

    at: datetime | None
    day: date | None


def _demo_hour(hour: int) -> int:
    """An hour said without am/pm: 1 to 7 o'clock is the afternoon (a demo at 3 is
    15:00, not 03:00)."""
    return hour + 12 if 1 <= hour <= 7 else hour


def _afternoon(match: re.Match[str]) -> str:
    return f"at {_demo_hour(int(match.group(1)))}:{match.group(2) or '00'}"


def understand(text: str, now: datetime, zone: ZoneInfo) -> Wanted | None:
    """The time a person means, read in their zone ("next Tuesday morning" included)."""
    cleaned = text.lower().strip()
    cleaned = re.sub(r"\bnext\s+(?=(mon|tue|wed|thu|fri|sat|sun))", "", cleaned)
    for words, clock in sorted(PARTS_OF_DAY.items(), key=lambda item: -len(item[0])):
        cleaned = re.sub(rf"\b(in the |this )?{words}\b", f" {clock}", cleaned)
    # "at 3" is an hour, not a year (and the afternoon: _demo_hour).
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


# -- a stretch of time asked for ---------------------------------------------------------

# The hours of a part of the day, in the person's zone.
DAY_PARTS = {
    "morning": (time(0), time(12)),
    "afternoon": (time(12), time(17)),
    "evening": (time(17), time.max),
}
_PART = re.compile(r"\b(morning|afternoon|evening)s?\b|(?<![\d:])\s(am|pm)\b")
MONTHS = {
    name: number
    for number, names in enumerate(
        [("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
         ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
         ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
         ("dec", "december")],
        start=1,
    )
    for name in names
}  # fmt: skip
WEEKDAYS = {
    name: number
    for number, names in enumerate(
        [("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "weds", "wednesday"),
         ("thu", "thur", "thurs", "thursday"), ("fri", "friday"), ("sat", "saturday"),
         ("sun", "sunday")]
    )
    for name in names
}  # fmt: skip
_MONTH = "|".join(sorted(MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(sorted(WEEKDAYS, key=len, reverse=True))
_NTH = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
# One day, in the words people use; the named groups say which kind.
_DAY = re.compile(
    r"(?P<after_tomorrow>day after tomorrow)"
    r"|(?P<tomorrow>tomorrow|tmrw|tmr|tomorow)"
    r"|(?P<today>today|tonight|later today|this (?:morning|afternoon|evening))"
    rf"|(?P<this>this )?(?:next |on |coming )?(?P<weekday>{_WEEKDAY})\b"
    rf"|(?:the\s+)?{_NTH}(?:\s+of)?\s+(?P<month>{_MONTH})\b"
    rf"|(?P<month2>{_MONTH})\s+(?:the\s+)?(?P<day2>[0-3]?\d)(?:st|nd|rd|th)?\b"
    r"|the\s+(?P<day3>[0-3]?\d)(?:st|nd|rd|th)\b"
)
# "early next week", "end of January", "mid March": which part of a week or month.
_EARLY = r"(?P<early>early|beginning of|start of|first half of)\s+(?:the\s+)?"
_MID = r"(?P<mid>mid-?|middle of)\s*(?:the\s+)?"
_LATE = r"(?P<late>late|end of|the end of|second half of|last week of)\s+(?:the\s+)?"
_WHICH = rf"(?:{_EARLY}|{_MID}|{_LATE})?"
_NUMBERS = {"a": 1, "one": 1, "two": 2, "couple of": 2, "a couple of": 2, "three": 3,
            "few": 3, "a few": 3}  # fmt: skip
# "after the 20th", "from Monday", "before Friday", "until the 3rd".
_BOUNDED = re.compile(
    rf"\b(?P<how>after|from|starting|since|before|by|until|till)\s+(?:{_DAY.pattern})"
)
_AWAY = re.compile(r"\b(away|out|off|holiday|vacation|travell?ing|busy|leave|back)\b")


@dataclass(frozen=True)
class Period:
    """Days a person asked for a demo in (in their zone), maybe only some hours of each
    day (a part of the day, or from a time on), and how the bot names them."""

    first: date
    last: date
    hours: tuple[time, time] | None = None
    words: str = ""

    def holds(self, slot: Slot, zone: ZoneInfo) -> bool:
        local = slot.starts_at.astimezone(zone)
        if not self.first <= local.date() <= self.last:
            return False
        return self.hours is None or self.hours[0] <= local.time() < self.hours[1]


def _month_end(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return following - timedelta(days=1)


def _part(first: date, last: date, match: re.Match[str]) -> tuple[date, date]:
    """The early, middle or late part of a week (Mon-Wed, Thu-Sun) or a month (the
    first ten days, the middle ten, the rest), as the match says."""
    early, mid, late = (bool(match.groupdict().get(name)) for name in ("early", "mid", "late"))
    if (last - first).days < 7:
        if early:
            return first, first + timedelta(days=2)
        return (first + timedelta(days=3), last) if late or mid else (first, last)
    if early:
        return first, first + timedelta(days=9)
    if mid:
        return first + timedelta(days=10), first + timedelta(days=19)
    return (first + timedelta(days=20), last) if late else (first, last)


def _day_of(match: re.Match[str], today: date) -> date | None:
    if match.group("after_tomorrow"):
        return today + timedelta(days=2)
    if match.group("tomorrow"):
        return today + timedelta(days=1)
    if match.group("today"):
        return today
    if match.group("weekday"):
        ahead = (WEEKDAYS[match.group("weekday")] - today.weekday()) % 7
        return today + timedelta(days=ahead or (0 if match.group("this") else 7))
    day = int(match.group("day") or match.group("day2") or match.group("day3"))
    month = match.group("month") or match.group("month2")
    return _next_date(today, day, MONTHS[month] if month else None)


def _next_date(today: date, day: int, month: int | None) -> date | None:
    """The next date from today on that is day `day` of `month` (of any month if None)."""
    for offset in range(400 if month else 62):
        candidate = today + timedelta(days=offset)
        if candidate.day == day and (month is None or candidate.month == month):
            return candidate
    return None


def _weeks_or_months(text: str, today: date) -> tuple[date, date] | None:
    """This or next week or month (or part of it), the week after next, in N weeks,
    later this week or month."""
    monday = today - timedelta(days=today.weekday())
    if match := re.search(
        r"\bin (?P<n>\d|a couple of|couple of|a few|few|a|one|two|three) weeks?\b", text
    ):
        n = match.group("n")
        start = monday + timedelta(weeks=int(n) if n.isdigit() else _NUMBERS[n])
        return start, start + timedelta(days=6)
    if re.search(r"\bweek after next\b|\bin a fortnight\b", text):
        return monday + timedelta(weeks=2), monday + timedelta(weeks=2, days=6)
    if match := re.search(r"\blater (?:this|in the) (?P<unit>week|month)\b", text):
        last = monday + timedelta(days=6) if match.group("unit") == "week" else _month_end(today)
        return today + timedelta(days=1), last
    match = re.search(
        rf"\b{_WHICH}(?P<which>this|next|following|coming)?\s*(?P<unit>week|month)\b", text
    )
    if match is None or not (
        match.group("which") or match.group("early") or match.group("mid") or match.group("late")
    ):
        return None
    if match.group("unit") == "week":
        first = monday + timedelta(weeks=0 if match.group("which") in (None, "this") else 1)
        last = first + timedelta(days=6)
    else:
        first = today.replace(day=1)
        if match.group("which") not in (None, "this"):
            first = _month_end(first) + timedelta(days=1)
        last = _month_end(first)
    first, last = _part(first, last, match)
    return max(first, today), last


def _month_named(text: str, today: date) -> tuple[date, date] | None:
    """A month by name ("in January", "early March"): its next occurrence."""
    match = re.search(
        rf"\b{_WHICH}(?P<in>in |of |during )?(?P<month>{_MONTH})\b(?:\s+(?P<year>20\d\d))?", text
    )
    if match is None or (
        match.group("month") == "may"
        and not (
            match.group("in") or match.group("early") or match.group("mid") or match.group("late")
        )
    ):
        return None
    month = MONTHS[match.group("month")]
    year = int(match.group("year") or today.year)
    if match.group("year") is None and month < today.month:
        year += 1
    first, last = _part(date(year, month, 1), _month_end(date(year, month, 1)), match)
    return max(first, today), last


def _from_time(text: str) -> time | None:
    """A clock time: "3pm", "10:30", "at 3" (1 to 7 without am/pm is the afternoon)."""
    if match := re.search(r"\b(\d{1,2})(?::(\d{2}))?\s*(am|pm)\b", text):
        hour = int(match.group(1)) % 12 + (12 if match.group(3) == "pm" else 0)
        return time(hour, int(match.group(2) or 0))
    if match := re.search(
        r"\b(?:at|from|after)\s+(\d{1,2})(?::(\d{2}))?\b(?!\s*(?:st|nd|rd|th))", text
    ):
        hour = _demo_hour(int(match.group(1)))
        return time(hour, int(match.group(2) or 0)) if hour < 24 else None
    return None


def period_in(text: str, now: datetime, zone: ZoneInfo, horizon_days: int) -> Period | None:
    """The stretch of time `text` asks for, in the person's zone: a month ("sometime in
    January", "early next month"), a week ("next week", "the week after next"), the days
    after or before a day ("after the 20th", "I'm away until Friday"), one day ("next
    Thursday"), each maybe with a part of the day ("afternoons") or a time to start
    from; or only a part of the day ("in the morning"), over the days demos can be
    booked. None when the text names no time."""
    cleaned = " " + re.sub(r"[^\w:' ]", " ", text.lower()) + " "
    today = now.astimezone(zone).date()
    horizon = today + timedelta(days=horizon_days - 1)
    span: tuple[date, date] | None = None
    bounded = _BOUNDED.search(cleaned)
    if bounded and (day := _day_of(bounded, today)):
        how = bounded.group("how")
        if how in ("before", "by") or (
            how in ("until", "till") and not _AWAY.search(cleaned[: bounded.start()])
        ):
            span = (today, day - timedelta(days=1))
        else:
            span = (day + timedelta(days=1) if how == "after" else day, horizon)
    one = _DAY.search(cleaned)
    day = _day_of(one, today) if one else None
    dated = one is not None and not (one.group("weekday") or one.group("tomorrow"))
    if span is None and day is not None and dated:  # a date ("March 3") before its month
        span = (day, day)
    span = span or _weeks_or_months(cleaned, today) or _month_named(cleaned, today)
    if span is None and day is not None:
        span = (day, day)
    hours = None
    if part := _PART.search(cleaned):
        hours = DAY_PARTS[part.group(1) or ("morning" if part.group(2) == "am" else "afternoon")]
    if span is not None and span[0] == span[1] and (start := _from_time(cleaned)):
        hours = (start, time.max)
    if span is None and hours is None:
        return None
    first, last = span or (today, horizon)
    if last < first:
        return None
    return Period(first, last, hours, _words(first, last, hours, span is None, today, horizon))


def _words(
    first: date,
    last: date,
    hours: tuple[time, time] | None,
    any_day: bool,
    today: date,
    horizon: date,
) -> str:
    """How the bot names a period: "on Thu 13 Mar", "in the week of 17 Mar", "in
    January", "between Tue 11 Mar and Fri 14 Mar", "from Thu 20 Mar", each maybe with
    "in the afternoon" or "from 15:00"."""
    if any_day:
        days = ""
    elif first == last:
        days = f"on {first:%a} {first.day} {first:%b}"
    elif first.day == 1 and last == _month_end(first):
        days = f"in {first:%B}" + ("" if first.year == today.year else f" {first.year}")
    elif first.weekday() == 0 and (last - first).days == 6:
        days = f"in the week of {first.day} {first:%b}"
    elif last == horizon:
        days = f"from {first:%a} {first.day} {first:%b}"
    else:
        days = f"between {first:%a} {first.day} {first:%b} and {last:%a} {last.day} {last:%b}"
    if hours is None:
        return days
    name = next((name for name, span in DAY_PARTS.items() if span == hours), None)
    return f"{days} in the {name}".strip() if name else f"{days} from {hours[0]:%H:%M}".strip()
