"""Demo booking: offer free times in the person's time zone, understand the time they
choose, book it (or move their booked demo), and cancel."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.backend_action import BackendAction
from actions.demo_times import (
    Period,
    Slot,
    choose,
    offer,
    offer_for,
    period_in,
    understand,
)
from actions.logs import get_logger
from bot.backend_client import BackendError, BackendRejected

log = get_logger(__name__)
OFFERED = 4


class DemoAction(BackendAction):
    """What every demo action needs: the person's time zone and the booked times."""

    async def zone(self, profile_id: str) -> ZoneInfo:
        """The person's time zone if their profile has one, else the business's."""
        try:
            timezone = (await self.backend.get_profile(profile_id)).timezone
            if timezone:
                return ZoneInfo(timezone)
        except (BackendError, ZoneInfoNotFoundError, ValueError):
            pass
        return self.business.zone

    async def booked(self, now: datetime) -> set[datetime]:
        days = timedelta(days=self.business.demo.book_days_ahead + 1)
        return {b.starts_at for b in await self.backend.booked_demos(now, now + days)}


class ActionOfferDemo(DemoAction):
    """Offers free times: the next ones, or, when the person asked for a stretch of time
    ("next week", "sometime in January", "Thursday afternoon"), times within it
    (`demo_offer_kind: period`), else the ones nearest to it (`nearest`), or says it is
    further ahead than demos can be booked (`too_far`)."""

    def name(self) -> str:
        return "action_offer_demo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        now = self._clock()
        events: list[EventType] = []
        text = str(tracker.latest_message.get("text") or "")
        period = None
        kind = "next"
        try:
            profile_id = await self.profile_id(tracker)
            zone = await self.zone(profile_id)
            mine = await self.backend.demos_of(profile_id)
            period = period_in(text, now, zone, self.business.demo.book_days_ahead)
            kind, slots = self._offer(period, now, await self.booked(now), zone)
        except BackendError as error:
            log.warning("demo.offer_failed", conversation=tracker.sender_id, error=str(error))
            slots, zone, mine, profile_id = (
                [],
                self.business.zone,
                [],
                tracker.get_slot("profile_id"),
            )
        # Moving: asked to reschedule, or still choosing a new time for a booked demo.
        intent = tracker.latest_message.get("intent", {}).get("name")
        moving = bool(mine) and (
            intent == "reschedule_demo"
            or (intent != "book_demo" and tracker.get_slot("demo_mode") == "reschedule")
        )
        events += [
            SlotSet("profile_id", profile_id),
            SlotSet("demo_mode", "reschedule" if moving else "book"),
            SlotSet("demo_id", mine[0].id if moving else None),
            SlotSet("demo_offer_count", str(len(slots))),
            SlotSet("demo_zone", _zone_name(zone, now)),
            SlotSet("demo_minutes", str(self.business.demo.minutes)),
            SlotSet("demo_offer_kind", kind),
            SlotSet("demo_period", period.words if period else None),
            SlotSet("demo_days_ahead", str(self.business.demo.book_days_ahead)),
        ]
        for index in range(OFFERED):
            slot = slots[index] if index < len(slots) else None
            events.append(
                SlotSet(f"demo_slot_{index + 1}", slot.starts_at.isoformat() if slot else None)
            )
            events.append(SlotSet(f"demo_label_{index + 1}", slot.label(zone) if slot else None))
        return events

    def _offer(
        self, period: Period | None, now: datetime, booked: set[datetime], zone: ZoneInfo
    ) -> tuple[str, list[Slot]]:
        if period is None:
            return "next", offer(self.business, now, booked, OFFERED)
        return offer_for(period, self.business, now, booked, zone, OFFERED)


def _zone_name(zone: ZoneInfo, now: datetime) -> str:
    return f"times in {now.astimezone(zone):%Z}, {str(zone).split('/')[-1].replace('_', ' ')}"


class ActionPickDemoTime(DemoAction):
    def name(self) -> str:
        return "action_pick_demo_time"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        text = (tracker.latest_message.get("text") or "").strip()
        now = self._clock()
        # A button (or its exact words) names one of the offered slots.
        for index in range(1, OFFERED + 1):
            if text and text == tracker.get_slot(f"demo_label_{index}"):
                return _picked(tracker.get_slot(f"demo_slot_{index}"), text)
        # "the first one", "2", "the last" point at the list just offered.
        chosen = ordinal_in(text, int(tracker.get_slot("demo_offer_count") or 0))
        if chosen and tracker.get_slot(f"demo_slot_{chosen}"):
            label = str(tracker.get_slot(f"demo_label_{chosen}"))
            return _picked(tracker.get_slot(f"demo_slot_{chosen}"), label)
        try:
            profile_id = await self.profile_id(tracker)
            zone = await self.zone(profile_id)
            # "next week would suit me better": times in that stretch are offered.
            period = period_in(text, now, zone, self.business.demo.book_days_ahead)
            if period is not None and period.first != period.last:
                return [SlotSet("demo_pick", "period")]
            wanted = understand(text, now, zone)
            if wanted is None:
                return [SlotSet("demo_pick", "unreadable")]
            slot = choose(wanted, self.business, now, await self.booked(now), zone)
        except BackendError as error:
            log.warning("demo.pick_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("demo_pick", "unreadable")]
        if slot is None:
            label = Slot(wanted.at).label(zone) if wanted.at else text
            return [SlotSet("demo_pick", "unavailable"), SlotSet("demo_time_label", label)]
        return _picked(slot.starts_at.isoformat(), slot.label(zone))


ORDINALS = {
    "first": 1, "1st": 1, "one": 1, "second": 2, "2nd": 2, "two": 2,
    "third": 3, "3rd": 3, "three": 3, "fourth": 4, "4th": 4, "four": 4,
}  # fmt: skip
_ORDINAL = re.compile(
    r"^\W*(?:(?:the|option|number|no\.?|#)\s*)*(?P<which>[1-4]|first|1st|second|2nd|third|3rd"
    r"|fourth|4th|one|two|three|four|last)(?:\s+(?:one|option|slot|time|please|pls))*\W*$",
    re.I,
)


def ordinal_in(text: str, offered: int) -> int | None:
    """Which of the `offered` times a short answer like "the 2nd one" points at."""
    match = _ORDINAL.match(text.strip())
    if not match or offered == 0:
        return None
    which = match.group("which").lower()
    index = offered if which == "last" else int(which) if which.isdigit() else ORDINALS[which]
    return index if 1 <= index <= offered else None


def _picked(starts_at: Any, label: str) -> list[EventType]:
    return [
        SlotSet("demo_pick", "ok"),
        SlotSet("demo_time", str(starts_at)),
        SlotSet("demo_time_label", label),
    ]


class ActionBookDemo(DemoAction):
    def name(self) -> str:
        return "action_book_demo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        starts_at = datetime.fromisoformat(str(tracker.get_slot("demo_time")))
        try:
            profile_id = await self.profile_id(tracker)
            demo_id = tracker.get_slot("demo_id")
            if tracker.get_slot("demo_mode") == "reschedule" and demo_id:
                booking = await self.backend.move_demo(str(demo_id), starts_at)
            else:
                booking = await self.backend.book_demo(
                    profile_id, starts_at, self.business.demo.minutes, tracker.sender_id
                )
        except BackendRejected as rejected:
            if rejected.status == 409:
                return [SlotSet("demo_booking", "taken")]
            log.warning(
                "demo.book_refused", conversation=tracker.sender_id, problem=rejected.problem
            )
            return [SlotSet("demo_booking", "failed")]
        except BackendError as error:
            log.warning("demo.book_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("demo_booking", "failed")]
        log.info("demo.booked", conversation=tracker.sender_id, demo_id=booking.id)
        return [SlotSet("demo_booking", "booked"), SlotSet("demo_id", booking.id)]


class ActionCancelDemo(DemoAction):
    def name(self) -> str:
        return "action_cancel_demo"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        try:
            mine = await self.backend.demos_of(await self.profile_id(tracker))
            if not mine:
                return [SlotSet("demo_cancel", "none")]
            await self.backend.cancel_demo(mine[0].id)
        except BackendError as error:
            log.warning("demo.cancel_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("demo_cancel", "failed")]
        log.info("demo.cancelled", conversation=tracker.sender_id, demo_id=mine[0].id)
        return [SlotSet("demo_cancel", "cancelled"), SlotSet("demo_id", None)]
