"""Lead qualification: check each answer of the lead form, take corrections, and, once
complete, update the person's profile and report a `lead_qualified` event (which the
backend scores)."""

from __future__ import annotations

import re
from typing import Any

from email_validator import EmailNotValidError, validate_email
from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from actions.backend_action import BackendAction
from actions.logs import get_logger
from actions.names import name_in, straighten
from bot.backend_client import BackendError
from bot.identity import identity_of

log = get_logger(__name__)

# A whole answer that declines the question ("skip", "next question", "rather not say");
# "next month" or a company called "Next Level" is an answer, not a skip.
SKIP = re.compile(
    r"^\W*(skip( it| this| that| this one| (this |that |the )?question)?|pass|next( question| one)?"
    r"|(i'?d )?rather not( say)?|prefer not( to say)?|no comment|n/?a)\W*$",
    re.I,
)
UNSURE = re.compile(
    r"\b(not sure|no idea|don'?t know|dunno|idk|unsure|depends|haven'?t decided|can'?t say)\b", re.I
)
WORD_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100, "a hundred": 100,
    "a dozen": 12, "dozen": 12,
}  # fmt: skip
JUST_ME = re.compile(r"\b(just me|only me|myself|solo)\b", re.I)
TIMELINES = [
    (
        "now",
        re.compile(
            r"\b(now|right away|asap|immediately|today|this week|this month|urgent)\b", re.I
        ),
    ),
    ("this_quarter", re.compile(r"\b(quarter|next month|few weeks|couple of weeks|soon)\b", re.I)),
    ("later", re.compile(r"\b(later|this year|next year|months|eventually|someday)\b", re.I)),
]


def team_size(text: str) -> int | str | None:
    """People, as a number; "unknown" when the person does not know; None if unreadable."""
    text = straighten(text)
    if UNSURE.search(text):
        return "unknown"
    if JUST_ME.search(text):
        return 1
    numbers = [int(n) for n in re.findall(r"\d[\d,]*", text.replace(",", ""))]
    if numbers:
        return max(numbers) if 0 < max(numbers) <= 1_000_000 else None
    lowered = text.lower()
    for words, number in sorted(WORD_NUMBERS.items(), key=lambda item: -len(item[0])):
        if re.search(rf"\b{words}\b", lowered):
            return number
    return None


def timeline(text: str) -> str:
    text = straighten(text)
    if UNSURE.search(text):
        return "not_sure"
    for label, pattern in TIMELINES:
        if pattern.search(text):
            return label
    return text.strip()[:100]


def email_in(text: str) -> str | None:
    for candidate in re.findall(r"\S+@\S+", text):
        try:
            return validate_email(
                candidate.strip(".,;:!?()<>\"'"), check_deliverability=False
            ).normalized
        except EmailNotValidError:
            continue
    return None


def _free_text(value: Any, limit: int) -> str:
    text = straighten(str(value or "")).strip()
    return "skipped" if SKIP.match(text) or UNSURE.search(text) else text[:limit]


class ValidateLeadForm(FormValidationAction):
    def name(self) -> str:
        return "validate_lead_form"

    async def validate_first_name(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        name = name_in(str(value or ""))
        if name is None:
            return {"first_name": None, "lead_problem": "bad_name"}
        return {"first_name": name, "lead_problem": None}

    async def validate_work_email(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        email = email_in(str(value or ""))
        if email is None:
            return {"work_email": None, "lead_problem": "bad_email"}
        return {"work_email": email, "lead_problem": None}

    async def validate_company(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return {"company": _free_text(value, 200) or None}

    async def validate_team_size(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        size = team_size(str(value or ""))
        if size is None and SKIP.match(str(value or "")):
            size = "unknown"
        if size is None:
            return {"team_size": None, "lead_problem": "bad_number"}
        return {"team_size": str(size), "lead_problem": None}

    async def validate_use_case(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        return {"use_case": _free_text(value, 500) or None}

    async def validate_timeline(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "")
        return {"timeline": "not_sure" if SKIP.match(text) else timeline(text)}


CORRECTIONS = [
    # The company name ends where another clause starts ("… and we're 12 people").
    (
        "company",
        re.compile(
            r"\bcompany(?: name)?(?: is| to|:)?\s+(?P<value>.+?)(?=\s*(?:[,;]|\band\b|\bbut\b|$))",
            re.I,
        ),
    ),
    (
        "team_size",
        re.compile(r"\b(?:we are|we're|team size|people|size)\b.*?(?P<value>\d[\d,]*)", re.I),
    ),
    ("team_size", re.compile(r"(?P<value>\d[\d,]*)\s+people", re.I)),
    ("first_name", re.compile(r"(?<!company )\bname(?: is| to|:)\s+(?P<value>.+)$", re.I)),
]


class ActionCorrectAnswer(Action):
    """Takes "actually my email is …", "the company is Acme", "we are 40 people" in the
    middle of the lead form; the form then goes on from where it was."""

    def name(self) -> str:
        return "action_correct_answer"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        text = tracker.latest_message.get("text") or ""
        events: list[EventType] = []
        email = next(tracker.get_latest_entity_values("email"), None) or email_in(text)
        if email and (checked := email_in(str(email))):
            events.append(SlotSet("work_email", checked))
        for slot, pattern in CORRECTIONS:
            match = pattern.search(text)
            if not match or any(e["name"] == slot for e in events):
                continue
            raw = match.group("value").strip(" .!")
            value: Any = raw
            if slot == "team_size":
                value = str(team_size(raw) or "") or None
            elif slot == "first_name":
                value = name_in(raw)
            if value:
                events.append(SlotSet(slot, value))
        if events:
            return events
        # Nothing to correct: a bare answer ("Acme Corp") that NLU took for a correction
        # answers the question being asked, checked as the form would check it.
        requested = tracker.get_slot("requested_slot")
        check = getattr(ValidateLeadForm(), f"validate_{requested}", None)
        if check is None:
            return []
        result: dict[str, Any] = await check(text, dispatcher, tracker, domain)
        return [SlotSet(slot, value) for slot, value in result.items()]


class ActionSubmitLead(BackendAction):
    def name(self) -> str:
        return "action_submit_lead"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        slots = {
            k: tracker.get_slot(k)
            for k in ("first_name", "work_email", "company", "team_size", "use_case", "timeline")
        }
        size = slots["team_size"]
        attributes: dict[str, Any] = {
            "first_name": slots["first_name"],
            "email": slots["work_email"],
            "team_size": int(size) if size and str(size).isdigit() else None,
            "use_case": None if slots["use_case"] == "skipped" else slots["use_case"],
            "timeline": slots["timeline"],
        }
        if slots["company"] and slots["company"] != "skipped":
            attributes["company"] = slots["company"]
        kind, address = identity_of(tracker)
        try:
            profile = (await self.backend.identify(kind, address, attributes)).profile
            added = await self.backend.add_identity(profile.id, "email", str(slots["work_email"]))
            profile = added.profile
            await self.backend.record_event(
                profile.id,
                "lead_qualified",
                {"team_size": attributes["team_size"], "timeline": slots["timeline"]},
            )
        except BackendError as error:
            log.warning("lead.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("lead_saved", "not_saved")]
        log.info("lead.qualified", conversation=tracker.sender_id, profile_id=profile.id)
        return [SlotSet("lead_saved", "saved"), SlotSet("profile_id", profile.id)]
