"""Consent in conversation: subscribing (asked in clear words naming channel and purpose,
SMS with double opt-in), opting out in the person's own words, and preferences.

What the bot showed and what the person answered go into the backend's consent ledger
as the evidence. The actions set slots; the rules in data/rules/consent.yml choose the
words, which live in bot/domain/consent.yml.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import phonenumbers
from rasa_sdk import Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.forms import FormValidationAction
from rasa_sdk.types import DomainDict

from actions.backend_action import BackendAction
from actions.lead import email_in
from actions.logs import get_logger
from bot.backend_client import BackendError, ChannelConsent, Profile
from bot.business import Business, load_business
from bot.consent_words import about_something_else, clear_yes, stop_is_opt_out
from bot.identity import identity_of, kind_of_channel

log = get_logger(__name__)

SUBSCRIBABLE = ("sms", "email")
OPT_OUT_CHANNELS = ("sms", "email", "voice", "web")
PURPOSES = ("marketing", "transactional")
CHANNEL_WORDS = {"sms": "texts", "email": "e-mails", "voice": "calls", "web": "chat messages"}
FREQUENCIES = {"weekly": "weekly", "twice_monthly": "twice a month", "monthly": "monthly"}
TOPICS = {"offers": "offers", "product_news": "product news", "tips": "tips"}
STATE_WORDS = {"granted": "on", "withdrawn": "off", "none": "off"}
# A grant waiting for its double opt-in, by channel: what the person still has to do.
PENDING_WORDS = {
    "sms": "waiting for your YES by text",
    "email": "waiting for you to follow the link we e-mailed you",
}


# Read in this order: calls before the phone, and a named channel before "all"
# ("stop all the texts" means texts).
CHANNEL_HINTS = [
    ("voice", re.compile(r"\bcall|\bring", re.I)),
    ("sms", re.compile(r"sms|te?xt|txt|msg|message|phone\b|mobile", re.I)),
    ("email", re.compile(r"mail|newsletter|\blist\b", re.I)),
    ("all", re.compile(r"\ball\b|\bevery|again|never|anything|any ?way|contact", re.I)),
]


def channel_meant(value: Any) -> str | None:
    """The channel a `channel` entity stands for; NLU may return words it has not seen
    as synonyms ("txts"), so they are read by their stems too."""
    text = str(value or "").lower()
    if text in (*OPT_OUT_CHANNELS, "all"):
        return text
    return next((channel for channel, stem in CHANNEL_HINTS if stem.search(text)), None)


@lru_cache(maxsize=4)
def _region_of(phone: str) -> str:
    return str(phonenumbers.region_code_for_number(phonenumbers.parse(phone)))


def mobile_number(text: str, business: Business) -> str | None:
    """The phone number in `text` as E.164; numbers without a country code are read as
    the business's country (the one its contact number is in)."""
    for match in phonenumbers.PhoneNumberMatcher(text, _region_of(business.contact.phone)):
        if phonenumbers.is_valid_number(match.number):
            return phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
    return None


def known_address(profile: Profile, channel: str) -> str | None:
    """The number or address the person already gave for `channel`, if any."""
    kind = "sms" if channel == "sms" else "email"
    for identity in profile.identities:
        if identity.kind == kind:
            return identity.address
    return profile.phone if channel == "sms" else profile.email


def last_bot_text(tracker: Tracker) -> str:
    """What the bot said last: the exact wording the person answered."""
    for event in reversed(tracker.events):
        if event.get("event") == "bot" and event.get("text"):
            return str(event["text"])
    return ""


def own_words(tracker: Tracker, fallback: str) -> str:
    """The person's latest message; a button press is recorded as the choice it made."""
    text = str(tracker.latest_message.get("text") or "").strip()
    return fallback if not text or text.startswith("/") else text


def evidence_metadata(tracker: Tracker) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "conversation_id": tracker.sender_id,
        "input_channel": tracker.get_latest_input_channel() or "rest",
    }
    # A text's record in the backend (the SMS channel passes it): the person's own words
    # as they arrived, and the text an opt-out's confirmation answers.
    message_id = (tracker.latest_message.get("metadata") or {}).get("message_id")
    if isinstance(message_id, int):
        evidence["message_id"] = message_id
    return evidence


class ConsentAction(BackendAction):
    async def profile(self, tracker: Tracker) -> Profile:
        known = tracker.get_slot("profile_id")
        if known:
            return await self.backend.get_profile(str(known))
        kind, address = identity_of(tracker)
        return (await self.backend.identify(kind, address)).profile


class ActionPrepareSubscription(ConsentAction):
    """Works out what is missing before the consent question: the channel, then the
    number or address (unless the person gave it before)."""

    def name(self) -> str:
        return "action_prepare_subscription"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        channel = tracker.get_slot("consent_channel")
        if channel not in SUBSCRIBABLE:
            return [SlotSet("consent_channel", None), SlotSet("subscribe_step", "ask_channel")]
        events: list[EventType] = [
            SlotSet("consent_problem", None),
            SlotSet("consent_result", None),
        ]
        try:
            profile = await self.profile(tracker)
        except BackendError as error:
            log.warning(
                "subscribe.backend_failed", conversation=tracker.sender_id, error=str(error)
            )
            return [
                *events,
                SlotSet("consent_address", None),
                SlotSet("subscribe_step", "ask_address"),
            ]
        # A number or address in this very message ("text me at 415 555 2671") wins.
        address = self._address_in(tracker, channel) or known_address(profile, channel)
        events.append(SlotSet("profile_id", profile.id))
        if address:
            return [
                *events,
                SlotSet("consent_address", address),
                SlotSet("subscribe_step", "ask_consent"),
            ]
        return [*events, SlotSet("consent_address", None), SlotSet("subscribe_step", "ask_address")]

    def _address_in(self, tracker: Tracker, channel: str) -> str | None:
        text = str(tracker.latest_message.get("text") or "")
        if channel == "sms":
            return mobile_number(text, self.business)
        return email_in(text)


class ValidateSubscribeForm(FormValidationAction):
    def __init__(self, business: Business | None = None) -> None:
        self._business = business

    def name(self) -> str:
        return "validate_subscribe_form"

    async def validate_consent_address(
        self, value: Any, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict
    ) -> dict[str, Any]:
        text = str(value or "")
        channel = tracker.get_slot("consent_channel")
        fixed: dict[str, Any] = {}
        if channel not in SUBSCRIBABLE:
            # An address can hold a channel's word ("email.ada@…"), which the NLU then
            # tags as the channel: the address itself says which channel it is for.
            channel = "email" if email_in(text) else "sms"
            fixed["consent_channel"] = channel
        if channel == "sms":
            address = mobile_number(text, self._business or load_business())
        else:
            address = email_in(text)
        if address is None:
            return {"consent_address": None, "consent_problem": "bad_address", **fixed}
        return {"consent_address": address, "consent_problem": None, **fixed}


class ActionRecordConsent(ConsentAction):
    """The person said yes to the consent question: the number or address becomes one of
    their identities and the grant goes into the ledger with the question and the answer.
    SMS and e-mail marketing stay pending until the person confirms (double opt-in): a
    YES to the text, the link in the e-mail the backend sends. A yes that is not clear
    ("yes but not at that number") records nothing (`consent_result: unclear`): the
    question is asked again."""

    def name(self) -> str:
        return "action_record_consent"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        channel = str(tracker.get_slot("consent_channel"))
        address = str(tracker.get_slot("consent_address") or "")
        if channel not in SUBSCRIBABLE or not address:
            return [SlotSet("consent_result", "failed")]
        if not clear_yes(str(tracker.latest_message.get("text") or "")):
            return [SlotSet("consent_result", "unclear")]
        try:
            profile = await self.profile(tracker)
            profile = (await self.backend.add_identity(profile.id, channel, address)).profile
            state = await self.backend.record_consent(
                profile.id,
                channel,
                "marketing",
                "grant",
                wording=last_bot_text(tracker),
                reply=own_words(tracker, "yes (button)"),
                metadata={**evidence_metadata(tracker), "address": address},
            )
        except BackendError as error:
            log.warning("consent.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("consent_result", "failed")]
        result = "pending" if state.state == "pending" else "granted"
        log.info("consent.granted", conversation=tracker.sender_id, profile_id=profile.id,
                 channel=channel, state=state.state)  # fmt: skip
        return [SlotSet("consent_result", result), SlotSet("profile_id", profile.id)]


class ActionOptOut(ConsentAction):
    """Withdraws consent for the channel the person named ("stop texting me"), for every
    channel when they said so ("don't contact me again"), and when they named none: for
    the channel they are writing on if we market on it (a text: SMS; a call: calls), else
    for the one channel they are subscribed on, and asks when that is ambiguous.

    Also runs for `stop` outside a form (data/rules/consent.yml): a request to stop that
    names nothing ("please stop", "enough!") or is about our messages ("get me off this
    list") is an opt-out; anything else ("stop asking", "never mind") withdraws nothing
    (`optout: nothing`), and nor do words about something else than the person's own
    messages ("can my customers unsubscribe?", "I don't want you to stop texting")."""

    def name(self) -> str:
        return "action_opt_out"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        text = str(tracker.latest_message.get("text") or "")
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        if (intent == "stop" and not stop_is_opt_out(text)) or about_something_else(text):
            return [SlotSet("optout", "nothing")]
        named = next(
            filter(None, map(channel_meant, tracker.get_latest_entity_values("channel"))), None
        ) or self._channel_written_on(tracker)
        try:
            profile = await self.profile(tracker)
            channel = named or self._only_channel(await self.backend.consent_states(profile.id))
            if channel is None:
                return [SlotSet("optout", "ask_channel"), SlotSet("consent_channel", None)]
            for purpose in PURPOSES:
                await self.backend.record_consent(
                    profile.id,
                    channel,
                    purpose,
                    "withdraw",
                    wording=last_bot_text(tracker) or "(the person asked without being asked)",
                    reply=own_words(tracker, f"stop {channel} (button)"),
                    metadata=evidence_metadata(tracker),
                )
        except BackendError as error:
            log.warning("optout.backend_failed", conversation=tracker.sender_id, error=str(error))
            return [SlotSet("optout", "failed")]
        log.info("consent.withdrawn", conversation=tracker.sender_id, profile_id=profile.id,
                 channel=channel)  # fmt: skip
        return [
            SlotSet("optout", "done"),
            SlotSet("consent_channel", channel),
            SlotSet("profile_id", profile.id),
        ]

    @staticmethod
    def _channel_written_on(tracker: Tracker) -> str | None:
        """The channel a person means by "stop" when they write on it: a text stops
        texts, words on a call stop calls (as the carriers' STOP keyword does)."""
        kind = kind_of_channel(tracker.get_latest_input_channel())
        return kind if kind in ("sms", "voice") else None

    @staticmethod
    def _only_channel(states: list[ChannelConsent]) -> str | None:
        """The channel meant when none was named: the only one they are subscribed on,
        or every channel when they are subscribed on none; None when it is ambiguous."""
        live = {
            s.channel
            for s in states
            if s.purpose == "marketing" and s.state in ("granted", "pending")
        }
        if len(live) > 1:
            return None
        return live.pop() if live else "all"


def preferences_summary(profile: Profile, states: list[ChannelConsent]) -> str:
    marketing = {s.channel: s.state for s in states if s.purpose == "marketing"}
    channels = "; ".join(
        f"{CHANNEL_WORDS[c]}: {_state_words(c, marketing.get(c, 'none'))}" for c in SUBSCRIBABLE
    )
    frequency = FREQUENCIES.get(str(profile.attributes.get("marketing_frequency")), "as they come")
    topics = [TOPICS[t] for t in profile.attributes.get("marketing_topics") or [] if t in TOPICS]
    topic_text = ", ".join(topics) if topics else "everything"
    return f"Your messages from us: {channels}. How often: {frequency}. Topics: {topic_text}."


def _state_words(channel: str, state: str) -> str:
    if state == "pending":
        return PENDING_WORDS.get(channel, "waiting for your confirmation")
    return STATE_WORDS.get(state, "off")


class ActionShowPreferences(ConsentAction):
    def name(self) -> str:
        return "action_show_preferences"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        try:
            profile = await self.profile(tracker)
            states = await self.backend.consent_states(profile.id)
        except BackendError as error:
            log.warning("preferences.backend_failed", conversation=tracker.sender_id,
                        error=str(error))  # fmt: skip
            return [SlotSet("preferences_summary", "I can't look up your settings right now.")]
        return [
            SlotSet("preferences_summary", preferences_summary(profile, states)),
            SlotSet("profile_id", profile.id),
        ]


class ActionSetPreference(ConsentAction):
    """Saves how often and about what the person wants to hear (profile attributes
    `marketing_frequency` and `marketing_topics`, which follow-up sequences read)."""

    def name(self) -> str:
        return "action_set_preference"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[EventType]:
        frequency = next(tracker.get_latest_entity_values("frequency"), None)
        topics = sorted({str(t) for t in tracker.get_latest_entity_values("topic") if t in TOPICS})
        changes: dict[str, Any] = {}
        if frequency in FREQUENCIES:
            changes["marketing_frequency"] = frequency
        if topics:
            changes["marketing_topics"] = topics
        saved = "saved" if changes else "nothing"
        try:
            profile = await self.profile(tracker)
            if changes:
                profile = await self.backend.update_profile(profile.id, changes)
            states = await self.backend.consent_states(profile.id)
        except BackendError as error:
            log.warning("preferences.backend_failed", conversation=tracker.sender_id,
                        error=str(error))  # fmt: skip
            return [SlotSet("preference_saved", "failed")]
        log.info("preferences.saved", conversation=tracker.sender_id, profile_id=profile.id,
                 changed=sorted(changes))  # fmt: skip
        return [
            SlotSet("preference_saved", saved),
            SlotSet("preferences_summary", preferences_summary(profile, states)),
            SlotSet("profile_id", profile.id),
        ]
