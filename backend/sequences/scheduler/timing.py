"""When a step may run: the end of a wait, and a person's fixed roll for an A/B split.
Pure functions of their inputs. (Quiet hours and the caps are the doors' guards:
backend.messaging.guards.)"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from backend.messaging.guards import at_local
from backend.sequences.definition import WaitUntil, Weekday

WEEKDAYS = list(Weekday)


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
        candidate = at_local(candidate_day, plan.until, zone)
        # "Until 10:00" at 10:00 means tomorrow's; "for 1d, until 10:00" may end on it.
        if candidate > earliest or (plan.for_ and candidate == earliest):
            return candidate
    raise AssertionError("a weekday comes round within nine days")  # pragma: no cover


def roll_for(profile_id: uuid.UUID, sequence: str, step: str) -> float:
    """A number in [0, 1), the same for one person and step every time."""
    digest = hashlib.sha256(f"{profile_id}:{sequence}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
