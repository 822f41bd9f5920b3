"""Consent in conversation: what is asked before the consent question, the evidence that
goes into the ledger (the bot's last words and the person's answer), SMS double opt-in,
opting out in the person's own words, and preferences."""

from __future__ import annotations

from typing import Any

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.consent import (
    ActionOptOut,
    ActionPrepareSubscription,
    ActionRecordConsent,
    ActionSetPreference,
    ActionShowPreferences,
    ValidateSubscribeForm,
    channel_meant,
)
from bot.business import load_business
from bot.consent_words import about_something_else, clear_yes, no_object_stop, stop_is_opt_out
from tests.bot.fakes import FakeBackend, bot_said, conversation, entity, person_said, slots_of

SENDER = "web-consent-1"
PHONE = "+14158675309"
QUESTION_SMS = (
    "Can we text you offers and product news at +14158675309? About twice a month; "
    "reply STOP any time. Yes or no?"
)
QUESTION_EMAIL = "Can we e-mail you offers and product news at ada@acme.io? Yes or no?"


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def person(fake: FakeBackend, **identities: str) -> str:
    return fake.add_person("web", SENDER, identities=identities)


# -- before the question -----------------------------------------------------------------


async def prepare(fake: FakeBackend, slots: dict[str, Any]) -> dict[str, Any]:
    tracker = conversation(SENDER, "sign me up", "subscribe", slots=slots)
    return slots_of(await ActionPrepareSubscription(fake).run(CollectingDispatcher(), tracker, {}))


@pytest.mark.parametrize("channel", [None, "voice", "carrier pigeon"])
async def test_without_a_channel_to_subscribe_on_the_person_is_asked_which(
    fake: FakeBackend, channel: str | None
) -> None:
    assert await prepare(fake, {"consent_channel": channel}) == {
        "consent_channel": None,
        "subscribe_step": "ask_channel",
    }
    assert fake.calls == []


async def test_a_number_given_before_is_not_asked_for_again(fake: FakeBackend) -> None:
    profile_id = person(fake, sms=PHONE)
    slots = await prepare(fake, {"consent_channel": "sms", "consent_result": "failed"})
    assert slots == {
        "consent_problem": None,
        "consent_result": None,
        "profile_id": profile_id,
        "consent_address": PHONE,
        "subscribe_step": "ask_consent",
    }


async def test_a_number_in_the_request_itself_goes_straight_to_the_consent_question(
    fake: FakeBackend,
) -> None:
    person(fake, sms=PHONE)
    tracker = conversation(
        SENDER, "text me offers at (415) 555-2671", "subscribe", slots={"consent_channel": "sms"}
    )
    events = await ActionPrepareSubscription(fake).run(CollectingDispatcher(), tracker, {})
    slots = slots_of(events)
    assert slots["consent_address"] == "+14155552671"
    assert slots["subscribe_step"] == "ask_consent"


async def test_an_email_address_on_the_profile_is_used(fake: FakeBackend) -> None:
    profile_id = fake.add_person("web", SENDER, {"email": "ada@acme.io"})
    slots = await prepare(fake, {"consent_channel": "email", "profile_id": profile_id})
    assert slots["consent_address"] == "ada@acme.io"
    assert slots["subscribe_step"] == "ask_consent"
    assert fake.called("get_profile") == [{"profile_id": profile_id}]


async def test_an_email_address_is_not_offered_as_a_phone_number(fake: FakeBackend) -> None:
    person(fake, email="ada@acme.io")
    slots = await prepare(fake, {"consent_channel": "sms"})
    assert slots["consent_address"] is None
    assert slots["subscribe_step"] == "ask_address"


async def test_when_the_backend_is_down_the_address_is_asked_for(fake: FakeBackend) -> None:
    fake.down = True
    slots = await prepare(fake, {"consent_channel": "email"})
    assert slots == {
        "consent_problem": None,
        "consent_result": None,
        "consent_address": None,
        "subscribe_step": "ask_address",
    }


async def check_address(channel: str, text: str) -> dict[str, Any]:
    form = ValidateSubscribeForm(load_business())
    tracker = conversation(SENDER, text, "inform", slots={"consent_channel": channel})
    result: dict[str, Any] = await form.validate_consent_address(
        text, CollectingDispatcher(), tracker, {}
    )
    return result


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(415) 867-5309", PHONE),
        ("it's 415 867 5309", PHONE),
        ("+44 7911 123456", "+447911123456"),
    ],
)
async def test_a_mobile_number_is_stored_in_international_form(text: str, expected: str) -> None:
    assert await check_address("sms", text) == {
        "consent_address": expected,
        "consent_problem": None,
    }


@pytest.mark.parametrize(("channel", "text"), [("sms", "12345"), ("sms", "ada@acme.io"),
                                               ("email", "my usual one"), ("email", PHONE)])  # fmt: skip
async def test_an_address_that_does_not_fit_the_channel_is_asked_again(
    channel: str, text: str
) -> None:
    assert await check_address(channel, text) == {
        "consent_address": None,
        "consent_problem": "bad_address",
    }


async def test_an_address_holding_a_channels_word_is_taken_for_its_own_channel() -> None:
    """The NLU may tag "email" inside an address as the channel, leaving the address
    itself in the channel slot: the address says which channel it is for."""
    address = "e2e-email-7f3a@example.com"
    assert await check_address(address, address) == {
        "consent_address": address,
        "consent_problem": None,
        "consent_channel": "email",
    }


async def test_an_email_address_is_normalised() -> None:
    assert await check_address("email", "Ada@ACME.io please") == {
        "consent_address": "Ada@acme.io",
        "consent_problem": None,
    }


# -- recording a yes ---------------------------------------------------------------------


async def say_yes(
    fake: FakeBackend,
    channel: str,
    address: str,
    answer: str = "yes please",
    question: str = QUESTION_SMS,
    slots: dict[str, Any] | None = None,
    input_channel: str = "rest",
) -> dict[str, Any]:
    tracker = conversation(
        SENDER,
        answer,
        "affirm",
        channel=input_channel,
        slots={"consent_channel": channel, "consent_address": address, **(slots or {})},
        before=[
            person_said("hi", channel=input_channel),
            bot_said("Hi! I'm the Brightdesk assistant."),
            person_said("can you text me offers", "subscribe", input_channel),
            bot_said(question),
        ],
    )
    return slots_of(await ActionRecordConsent(fake).run(CollectingDispatcher(), tracker, {}))


async def test_an_sms_yes_waits_for_the_confirmation_text(fake: FakeBackend) -> None:
    profile_id = person(fake)
    slots = await say_yes(fake, "sms", PHONE)
    assert slots == {"consent_result": "pending", "profile_id": profile_id}
    assert fake.state(profile_id, "sms", "marketing") == "pending"


async def test_the_question_and_the_answer_are_the_evidence(fake: FakeBackend) -> None:
    profile_id = person(fake)
    await say_yes(fake, "sms", PHONE, answer="Yes, go ahead", input_channel="socketio")
    assert fake.called("record_consent") == [
        {
            "profile_id": profile_id,
            "channel": "sms",
            "purpose": "marketing",
            "action": "grant",
            "wording": QUESTION_SMS,
            "reply": "Yes, go ahead",
            "metadata": {
                "conversation_id": SENDER,
                "input_channel": "socketio",
                "address": PHONE,
            },
        }
    ]


async def test_a_yes_button_is_recorded_as_the_choice_it_made(fake: FakeBackend) -> None:
    person(fake)
    await say_yes(fake, "email", "ada@acme.io", answer="/affirm", question=QUESTION_EMAIL)
    [call] = fake.called("record_consent")
    assert call["reply"] == "yes (button)"
    assert call["wording"] == QUESTION_EMAIL


async def test_an_email_yes_waits_for_the_confirmation_link(fake: FakeBackend) -> None:
    profile_id = person(fake)
    slots = await say_yes(fake, "email", "ada@acme.io", question=QUESTION_EMAIL)
    assert slots["consent_result"] == "pending"  # the bot says: follow the link we e-mailed
    assert fake.state(profile_id, "email", "marketing") == "pending"


async def test_the_number_becomes_one_of_the_persons_identities(fake: FakeBackend) -> None:
    profile_id = person(fake)
    await say_yes(fake, "sms", PHONE)
    stored = fake.profile_of("sms", PHONE)
    assert stored is not None and stored.id == profile_id


async def test_a_number_someone_already_had_merges_the_two_into_one_person(
    fake: FakeBackend,
) -> None:
    earlier = fake.add_person("sms", PHONE)
    person(fake)
    slots = await say_yes(fake, "sms", PHONE)
    assert slots["profile_id"] == earlier
    assert fake.state(earlier, "sms", "marketing") == "pending"


async def test_a_confirmed_sms_subscriber_saying_yes_again_stays_subscribed(
    fake: FakeBackend,
) -> None:
    profile_id = person(fake, sms=PHONE)
    fake.grant(profile_id, "sms")
    fake.confirm(profile_id, "sms")
    slots = await say_yes(fake, "sms", PHONE, slots={"profile_id": profile_id})
    assert slots["consent_result"] == "granted"


@pytest.mark.parametrize(("channel", "address"), [("sms", ""), ("voice", PHONE), ("None", "x")])
async def test_a_yes_without_a_channel_or_address_records_nothing(
    fake: FakeBackend, channel: str, address: str
) -> None:
    assert await say_yes(fake, channel, address) == {"consent_result": "failed"}
    assert fake.calls == []


async def test_a_yes_when_the_backend_is_down_is_not_taken_as_recorded(fake: FakeBackend) -> None:
    fake.down = True
    assert await say_yes(fake, "sms", PHONE) == {"consent_result": "failed"}


@pytest.mark.parametrize(
    "answer",
    [
        "yes but not at that number",
        "ok, but only by email",
        "sure, how often?",
        "yeah right",
        "yes if it's free",
        "hmm ok",
        "👎",
    ],
)
async def test_a_yes_that_is_not_clear_records_nothing(fake: FakeBackend, answer: str) -> None:
    person(fake)
    assert await say_yes(fake, "sms", PHONE, answer=answer) == {"consent_result": "unclear"}
    assert fake.calls == []


@pytest.mark.parametrize(
    "answer",
    [
        "yes",
        "sure why not",
        "no problem, go ahead",
        "yes, 4 a month is fine",
        "OK 👍",
        "uh huh",
        "/affirm",
    ],
)
def test_a_plain_yes_is_clear(answer: str) -> None:
    assert clear_yes(answer)


# -- opting out --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("sms", "sms"),
        ("texts", "sms"),
        ("txts", "sms"),
        ("texting", "sms"),
        ("emails", "email"),
        ("e-mail", "email"),
        ("newsletter", "email"),
        ("all", "all"),
        ("anything", "all"),
        ("contact", "all"),
        ("calls", "voice"),
        ("calling", "voice"),
        ("phone calls", "voice"),
        ("chat", None),
    ],
)
def test_channel_meant_reads_the_persons_words(words: str, expected: str | None) -> None:
    assert channel_meant(words) == expected


async def opt_out(
    fake: FakeBackend,
    text: str,
    channel_words: str | None = None,
    before: list[dict[str, Any]] | None = None,
    slots: dict[str, Any] | None = None,
) -> list[Any]:
    entities = [entity("channel", channel_words)] if channel_words else []
    tracker = conversation(SENDER, text, "opt_out", entities, slots=slots, before=before)
    events: list[Any] = await ActionOptOut(fake).run(CollectingDispatcher(), tracker, {})
    return events


def subscribed(fake: FakeBackend, *channels: str) -> str:
    """Someone who agreed on these channels: by e-mail confirmed (they followed the
    link), by SMS still waiting for their YES."""
    profile_id = person(fake, sms=PHONE, email="ada@acme.io")
    for channel in channels:
        fake.grant(profile_id, channel)
        if channel == "email":
            fake.confirm(profile_id, channel)
    return profile_id


async def test_stop_texting_me_withdraws_both_purposes_on_sms_only(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "sms", "email")
    events = await opt_out(fake, "stop texting me", "texting")
    assert events == [
        SlotSet("optout", "done"),
        SlotSet("consent_channel", "sms"),
        SlotSet("profile_id", profile_id),
    ]
    assert [(c["channel"], c["purpose"], c["action"]) for c in fake.called("record_consent")] == [
        ("sms", "marketing", "withdraw"),
        ("sms", "transactional", "withdraw"),
    ]
    assert fake.state(profile_id, "sms", "marketing") == "withdrawn"
    assert fake.state(profile_id, "sms", "transactional") == "withdrawn"
    assert fake.state(profile_id, "email", "marketing") == "granted"


async def test_stop_calling_me_withdraws_calls_not_everything(fake: FakeBackend) -> None:
    # "calling" contains "all", which channel_meant checks first.
    profile_id = subscribed(fake, "email")
    events = await opt_out(fake, "stop calling me", "calling")
    assert slots_of(events)["consent_channel"] == "voice"
    assert {c["channel"] for c in fake.called("record_consent")} == {"voice"}
    assert fake.state(profile_id, "email", "marketing") == "granted"


async def test_the_opt_out_evidence_is_the_persons_own_words(fake: FakeBackend) -> None:
    subscribed(fake, "email")
    before = [bot_said("Here's what's new in Brightdesk this month: …")]
    await opt_out(fake, "please stop emailing me", "emailing", before=before)
    calls = fake.called("record_consent")
    assert {c["reply"] for c in calls} == {"please stop emailing me"}
    assert {c["wording"] for c in calls} == {"Here's what's new in Brightdesk this month: …"}
    assert calls[0]["metadata"] == {"conversation_id": SENDER, "input_channel": "rest"}


async def test_an_unprompted_opt_out_says_so_in_the_evidence(fake: FakeBackend) -> None:
    subscribed(fake, "email")
    await opt_out(fake, "unsubscribe me from the newsletter", "newsletter")
    assert {c["wording"] for c in fake.called("record_consent")} == {
        "(the person asked without being asked)"
    }


async def test_an_opt_out_button_is_recorded_as_the_choice_it_made(fake: FakeBackend) -> None:
    subscribed(fake, "email")
    await opt_out(fake, "/opt_out", "email")
    assert {c["reply"] for c in fake.called("record_consent")} == {"stop email (button)"}


async def test_dont_contact_me_again_withdraws_every_channel(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "sms", "email")
    events = await opt_out(fake, "don't contact me again", "contact me again")
    assert slots_of(events)["consent_channel"] == "all"
    assert {(c["channel"], c["purpose"]) for c in fake.called("record_consent")} == {
        ("all", "marketing"),
        ("all", "transactional"),
    }
    for channel in ("sms", "email", "voice", "web"):
        assert fake.state(profile_id, channel, "marketing") == "withdrawn"


async def test_with_one_subscription_and_no_channel_named_that_one_is_meant(
    fake: FakeBackend,
) -> None:
    profile_id = subscribed(fake, "email")
    fake.grant(profile_id, "sms", "transactional")  # not a subscription to marketing
    events = await opt_out(fake, "unsubscribe")
    assert slots_of(events)["consent_channel"] == "email"
    assert {c["channel"] for c in fake.called("record_consent")} == {"email"}
    assert fake.state(profile_id, "sms", "transactional") == "granted"


async def test_a_pending_sms_subscription_counts_as_a_subscription(fake: FakeBackend) -> None:
    subscribed(fake, "sms")
    events = await opt_out(fake, "stop")
    assert slots_of(events)["consent_channel"] == "sms"


async def test_with_two_subscriptions_and_no_channel_named_the_person_is_asked(
    fake: FakeBackend,
) -> None:
    subscribed(fake, "sms", "email")
    events = await opt_out(fake, "unsubscribe me")
    assert events == [SlotSet("optout", "ask_channel"), SlotSet("consent_channel", None)]
    assert fake.called("record_consent") == []


async def test_a_channel_word_that_means_nothing_counts_as_none_named(fake: FakeBackend) -> None:
    subscribed(fake, "sms", "email")
    assert slots_of(await opt_out(fake, "stop the chat", "chat"))["optout"] == "ask_channel"


async def test_a_withdrawn_subscription_does_not_make_it_ambiguous(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "sms", "email")
    await opt_out(fake, "no more texts", "texts")
    fake.calls.clear()
    events = await opt_out(fake, "unsubscribe", slots={"profile_id": profile_id})
    assert slots_of(events)["consent_channel"] == "email"
    assert fake.state(profile_id, "email", "marketing") == "withdrawn"


async def test_with_no_subscription_and_no_channel_named_everything_stops(
    fake: FakeBackend,
) -> None:
    profile_id = person(fake)
    events = await opt_out(fake, "leave me alone")
    assert slots_of(events)["consent_channel"] == "all"
    assert fake.state(profile_id, "sms", "marketing") == "withdrawn"


async def test_an_opt_out_when_the_backend_is_down_is_not_said_to_be_done(
    fake: FakeBackend,
) -> None:
    fake.down = True
    assert await opt_out(fake, "stop texting me", "texting") == [SlotSet("optout", "failed")]


# -- a stop that names no object ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "stop",
        "Stop.",
        "STOP IT NOW!!",
        "please stop",
        "stooop",
        "stop f***ing now",
        "enough already",
        "that's enough",
        "no more",
        "quit it",
        "cut that out",
        "can you just stop",
        "i want you to stop",
        "🛑 stop 🛑",
        "STOP STOP STOP",
    ],
)
def test_a_request_to_stop_that_names_nothing_is_a_no_object_stop(text: str) -> None:
    assert no_object_stop(text)


@pytest.mark.parametrize(
    "text",
    [
        "stop asking",
        "stop the questions",
        "no more questions",
        "wait stop, I meant the Business plan",
        "stop right there, that's what I need",
        "don't stop",
        "no I don't want to stop, continue",
        "never mind",
        "forget it",
        "cancel",
        "stop texting me",  # names a channel: intent opt_out, not stop
    ],
)
def test_a_stop_that_names_something_else_is_not_a_no_object_stop(text: str) -> None:
    assert not no_object_stop(text)


@pytest.mark.parametrize(
    "text",
    [
        "please stop",
        "get me off this list",
        "stop it already, I'm not interested",
        "who is this? I never opted in. stop",
        "stop bothering me",
    ],
)
def test_a_stop_about_our_messages_is_an_opt_out(text: str) -> None:
    assert stop_is_opt_out(text)


@pytest.mark.parametrize(
    "text",
    [
        "stop asking",
        "no more questions, thanks for the help!",
        "I don't want you to stop texting, just not after 9pm",
        "hold on, stop, I typed the wrong email for the demo",
        "I'm not unsubscribing, I love the newsletter",
        "never mind",
    ],
)
def test_a_stop_about_something_else_or_not_to_stop_is_no_opt_out(text: str) -> None:
    assert not stop_is_opt_out(text)


async def stop(
    fake: FakeBackend, text: str, channel: str = "rest", sender: str = SENDER
) -> list[Any]:
    tracker = conversation(sender, text, "stop", channel=channel)
    events: list[Any] = await ActionOptOut(fake).run(CollectingDispatcher(), tracker, {})
    return events


async def test_a_stop_outside_a_form_withdraws_the_only_subscription(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "email")
    events = await stop(fake, "please stop!!")
    assert events == [
        SlotSet("optout", "done"),
        SlotSet("consent_channel", "email"),
        SlotSet("profile_id", profile_id),
    ]
    assert {c["reply"] for c in fake.called("record_consent")} == {"please stop!!"}
    assert fake.state(profile_id, "email", "marketing") == "withdrawn"


async def test_a_stop_naming_something_else_withdraws_nothing(fake: FakeBackend) -> None:
    subscribed(fake, "sms", "email")
    assert await stop(fake, "stop asking me things") == [SlotSet("optout", "nothing")]
    assert await stop(fake, "never mind") == [SlotSet("optout", "nothing")]
    assert fake.calls == []


@pytest.mark.parametrize(
    "text",
    [
        "can my customers unsubscribe from our survey emails?",
        "please remove the old agent from our plan",
        "can I take a seat off the invoice",
        "I'm not unsubscribing, just asking",
        "please don't remove me from the list",
        "no more than two texts a month please",
        "honestly I can't stop using it",
    ],
)
async def test_words_about_something_else_withdraw_nothing(fake: FakeBackend, text: str) -> None:
    subscribed(fake, "email")
    assert about_something_else(text)
    assert await opt_out(fake, text) == [SlotSet("optout", "nothing")]
    assert fake.calls == []


@pytest.mark.parametrize(
    "text",
    [
        "unsubscribe me",
        "why do you keep texting me",
        "tell your sales team to stop calling me",
        "I'm going to report this as spam",
        "you don't have my permission to text me",
        "stop texting me, my team already bought it",
        "unsubscribe me, our customers complained about your emails",
        "please remove my number, I'm not the one with the invoice",
    ],
)
def test_an_opt_out_about_the_persons_own_messages_is_not_something_else(text: str) -> None:
    assert not about_something_else(text)


async def test_a_stop_about_our_list_withdraws(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "email")
    assert slots_of(await stop(fake, "get me off this list"))["optout"] == "done"
    assert fake.state(profile_id, "email", "marketing") == "withdrawn"


async def test_in_web_chat_a_stop_with_two_subscriptions_asks_which(fake: FakeBackend) -> None:
    subscribed(fake, "sms", "email")
    events = await stop(fake, "enough!")
    assert events == [SlotSet("optout", "ask_channel"), SlotSet("consent_channel", None)]
    assert fake.called("record_consent") == []


async def test_a_stop_by_text_withdraws_sms_consent_only(fake: FakeBackend) -> None:
    profile_id = fake.add_person("sms", PHONE, identities={"email": "ada@acme.io"})
    fake.grant(profile_id, "sms")
    fake.grant(profile_id, "email")
    fake.confirm(profile_id, "email")
    events = await stop(fake, "stop it now", channel="sms", sender=PHONE)
    assert slots_of(events) == {
        "optout": "done",
        "consent_channel": "sms",
        "profile_id": profile_id,
    }
    assert [(c["channel"], c["purpose"]) for c in fake.called("record_consent")] == [
        ("sms", "marketing"),
        ("sms", "transactional"),
    ]
    assert fake.called("record_consent")[0]["metadata"]["input_channel"] == "sms"
    assert fake.state(profile_id, "sms", "marketing") == "withdrawn"
    assert fake.state(profile_id, "email", "marketing") == "granted"


async def test_an_opt_out_by_text_naming_no_channel_stops_texts(fake: FakeBackend) -> None:
    profile_id = fake.add_person("sms", PHONE, identities={"email": "ada@acme.io"})
    fake.grant(profile_id, "sms")
    fake.grant(profile_id, "email")
    fake.confirm(profile_id, "email")
    tracker = conversation(PHONE, "take me off your list", "opt_out", channel="sms")
    events = await ActionOptOut(fake).run(CollectingDispatcher(), tracker, {})
    assert slots_of(events)["consent_channel"] == "sms"
    assert fake.state(profile_id, "email", "marketing") == "granted"


async def test_an_opt_out_by_text_naming_email_stops_email(fake: FakeBackend) -> None:
    profile_id = fake.add_person("sms", PHONE, identities={"email": "ada@acme.io"})
    fake.grant(profile_id, "email")
    tracker = conversation(
        PHONE, "no more emails", "opt_out", [entity("channel", "emails")], channel="sms"
    )
    events = await ActionOptOut(fake).run(CollectingDispatcher(), tracker, {})
    assert slots_of(events)["consent_channel"] == "email"
    assert fake.state(profile_id, "email", "marketing") == "withdrawn"


async def test_a_stop_said_on_a_call_stops_calls(fake: FakeBackend) -> None:
    profile_id = fake.add_person("voice", PHONE)
    events = await stop(fake, "stop, please", channel="voice", sender=PHONE)
    assert slots_of(events)["consent_channel"] == "voice"
    assert fake.state(profile_id, "voice", "marketing") == "withdrawn"
    assert fake.state(profile_id, "sms", "marketing") == "none"


# -- preferences -------------------------------------------------------------------------


async def show(fake: FakeBackend) -> list[Any]:
    tracker = conversation(SENDER, "what am I subscribed to?", "change_preferences")
    events: list[Any] = await ActionShowPreferences(fake).run(CollectingDispatcher(), tracker, {})
    return events


async def test_preferences_show_each_channel_and_the_choices_made(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "sms", "email")
    fake.grant(profile_id, "email", "transactional")
    await fake.update_profile(
        profile_id, {"marketing_frequency": "weekly", "marketing_topics": ["offers", "tips"]}
    )
    events = await show(fake)
    assert events == [
        SlotSet(
            "preferences_summary",
            "Your messages from us: texts: waiting for your YES by text; e-mails: on. "
            "How often: weekly. Topics: offers, tips.",
        ),
        SlotSet("profile_id", profile_id),
    ]


async def test_preferences_of_someone_never_subscribed(fake: FakeBackend) -> None:
    person(fake)
    assert slots_of(await show(fake))["preferences_summary"] == (
        "Your messages from us: texts: off; e-mails: off. "
        "How often: as they come. Topics: everything."
    )


async def test_a_withdrawn_channel_shows_as_off(fake: FakeBackend) -> None:
    subscribed(fake, "email")
    await opt_out(fake, "no more emails", "emails")
    assert "e-mails: off" in slots_of(await show(fake))["preferences_summary"]


async def test_preferences_when_the_backend_is_down_say_so(fake: FakeBackend) -> None:
    fake.down = True
    assert await show(fake) == [
        SlotSet("preferences_summary", "I can't look up your settings right now.")
    ]


async def set_preference(fake: FakeBackend, entities: list[dict[str, Any]]) -> dict[str, Any]:
    tracker = conversation(SENDER, "monthly, only tips and offers", "set_preference", entities)
    return slots_of(await ActionSetPreference(fake).run(CollectingDispatcher(), tracker, {}))


async def test_a_frequency_and_topics_are_saved_on_the_profile(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "email")
    slots = await set_preference(
        fake,
        [entity("frequency", "monthly"), entity("topic", "tips"), entity("topic", "offers")],
    )
    assert slots["preference_saved"] == "saved"
    assert fake.profiles[profile_id].attributes == {
        "marketing_frequency": "monthly",
        "marketing_topics": ["offers", "tips"],
    }
    assert slots["preferences_summary"] == (
        "Your messages from us: texts: off; e-mails: on. How often: monthly. Topics: offers, tips."
    )


async def test_a_preference_not_understood_changes_nothing(fake: FakeBackend) -> None:
    profile_id = subscribed(fake, "email")
    slots = await set_preference(fake, [entity("frequency", "hourly"), entity("topic", "memes")])
    assert slots["preference_saved"] == "nothing"
    assert fake.called("update_profile") == []
    assert fake.profiles[profile_id].attributes == {}
    assert "How often: as they come" in slots["preferences_summary"]


async def test_a_preference_when_the_backend_is_down_is_not_said_saved(fake: FakeBackend) -> None:
    fake.down = True
    assert await set_preference(fake, [entity("frequency", "weekly")]) == {
        "preference_saved": "failed"
    }
