"""End to end: a person chats through Rasa's REST channel; the backend holds what they
said. The shared `parley run` is in conftest.py."""

from __future__ import annotations

import time

import pytest
import requests

from tests.e2e.conftest import Parley


def test_a_new_visitor_is_introduced_to_the_bot_and_their_name_reaches_the_backend(
    parley: Parley,
) -> None:
    disclosure, greeting = parley.say("e2e-ada", "hi")
    assert disclosure.startswith("I'm a bot")
    assert greeting == "Hi! What's your name?"

    assert parley.say("e2e-ada", "my name is Ada") == [
        "Nice to meet you, Ada! How can I help you today?"
    ]

    profile_id = parley.slots("e2e-ada")["profile_id"]
    profile = parley.api("GET", f"/api/v1/profiles/{profile_id}").json()
    assert profile["first_name"] == "Ada"
    assert [(i["kind"], i["address"]) for i in profile["identities"]] == [("web", "e2e-ada")]


def test_a_person_the_backend_knows_is_welcomed_back_by_name(parley: Parley) -> None:
    stored = parley.api(
        "POST",
        "/api/v1/identify",
        json={"channel": "web", "address": "e2e-grace", "attributes": {"first_name": "Grace"}},
    )
    assert stored.status_code == 201

    disclosure, welcome = parley.say("e2e-grace", "hello")
    assert disclosure.startswith("I'm a bot")
    assert welcome == "Welcome back, Grace! How can I help you today?"


def test_the_first_thing_a_person_hears_is_that_this_is_a_bot(parley: Parley) -> None:
    disclosure, *_ = parley.say("e2e-curious", "how much is the team plan?")
    assert disclosure.startswith("I'm a bot")
    [answer] = parley.say("e2e-curious", "are you a bot?")
    assert answer.startswith("Yes, I'm a bot")


def test_each_product_question_is_answered_about_the_products_it_names(parley: Parley) -> None:
    """The products a question is about are this message's, never the last one's: read
    in Rasa's process (bot/product_questions.py), with no custom action."""
    me = "e2e-shopper"
    parley.say(me, "hi")
    assert parley.say(me, "how much does the Business plan cost?") == [
        "Business is $59 per agent per month. Everything in Team, plus the AI assistant, "
        "SLAs, custom reports and SSO."
    ]
    [gold] = parley.say(me, "and how much is the Gold plan?")
    assert gold.startswith("I'm not sure which product you mean. We offer Starter, Team,")
    [every] = parley.say(me, "what are your prices?")
    assert every.startswith("Our prices: Starter: $15 per agent per month; Team: $35")
    [info] = parley.say(me, "tell me about the basic plan")
    assert info.startswith("Starter: ") and "Price: $15 per agent per month." in info
    assert parley.slots(me)["product"] == "starter"
    [compared] = parley.say(me, "compare Starter and Team")
    assert compared.startswith("Starter is $15 per agent per month; Team is $35")
    assert parley.say(me, "compare Team and Zendesk") == [
        'Which two plans would you like me to compare? For example: "compare Starter and Team".'
    ]


def test_a_person_qualifies_books_a_demo_subscribes_by_sms_and_opts_out(parley: Parley) -> None:
    """The journey the issue names, checked in the backend: profile, events, demo and
    the consent ledger hold exactly what was said."""
    me = "e2e-journey"
    parley.say(me, "hi")
    parley.say(me, "I'm Ada")

    replies = parley.say(me, "we're interested in buying Brightdesk")
    assert replies[-1] == parley_question("work_email")
    assert parley.say(me, "ada@acme.io") == [parley_question("company")]
    assert parley.say(me, "Acme Corp") == [parley_question("team_size")]
    assert parley.say(me, "about 12 people") == [parley_question("use_case")]
    assert parley.say(me, "answering customer emails faster") == [parley_question("timeline")]
    [saved] = parley.say(me, "this quarter")
    assert saved.startswith("Thanks, Ada!") and "book a 30-minute demo" in saved

    [offer] = parley.say(me, "yes")
    assert offer.startswith("Here are the next free times")
    first_label = parley.slots(me)["demo_label_1"]
    assert parley.say(me, "the first one") == [f"Shall I book your demo for {first_label}?"]
    [booked] = parley.say(me, "yes")
    assert booked.startswith("You're booked") and first_label in booked

    assert parley.say(me, "text me your offers") == ["What's your mobile number?"]
    [question] = parley.say(me, "+1 415 555 2671")
    assert question.startswith("Can Brightdesk text you product news and offers at +14155552671")
    [pending] = parley.say(me, "yes")
    assert "Reply YES" in pending

    profile_id = parley.slots(me)["profile_id"]
    consent = f"/api/v1/profiles/{profile_id}/consent"
    check = f"{consent}/sms/marketing"
    assert parley.api("GET", check).json()["state"] == "pending"
    # The question reaches the phone by text; the person's YES, texted back, confirms.
    [confirm_by_text] = parley.texts_to("+14155552671")
    assert confirm_by_text.startswith("Brightdesk: reply YES to confirm")
    assert parley.text("+14155552671", "YES")["webhook_status"] == 200
    deadline = time.monotonic() + 30
    while parley.api("GET", check).json()["state"] != "granted" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert parley.api("GET", check).json()["allowed"] is True

    assert parley.say(me, "stop texting me") == ["Done: Brightdesk won't text you any more."]
    assert parley.api("GET", check).json()["allowed"] is False

    profile = parley.api("GET", f"/api/v1/profiles/{profile_id}").json()
    assert (profile["first_name"], profile["email"], profile["company"]) == (
        "Ada", "ada@acme.io", "Acme Corp",
    )  # fmt: skip
    assert profile["attributes"]["team_size"] == 12
    assert profile["attributes"]["timeline"] == "this_quarter"
    assert sorted((i["kind"], i["address"]) for i in profile["identities"]) == [
        ("email", "ada@acme.io"), ("sms", "+14155552671"), ("web", me),
    ]  # fmt: skip

    # Besides the actions' events, Rasa's event broker reports what the person asked and
    # the forms they finished (in the background: wait for the last of them).
    wanted = ["demo_booked", "form_completed", "form_completed", "lead_qualified"]
    deadline = time.monotonic() + 30
    while True:
        events = parley.api("GET", f"/api/v1/profiles/{profile_id}/events").json()["items"]
        reported = [(e["type"], e["properties"]) for e in reversed(events)]
        found = sorted(t for t, _ in reported if t != "intent_expressed")
        if found == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert found == wanted
    forms = [p["form"] for t, p in reported if t == "form_completed"]
    assert forms == ["lead_form", "subscribe_form"]
    # Each message is reported with its channel and conversation (Rasa's REST channel).
    interested = {"intent": "interested", "channel": "rest", "conversation": me}
    assert ("intent_expressed", interested) in reported
    [demo] = parley.api("GET", f"/api/v1/profiles/{profile_id}/demos").json()["items"]
    assert demo["minutes"] == 30
    score = parley.api("GET", f"/api/v1/profiles/{profile_id}/score").json()
    assert {r["rule"] for r in score["reasons"]} >= {"lead-qualified", "demo-booked"}

    ledger = [
        (line["channel"], line["purpose"], line["action"], line["pending"], line["source"],
         line["reply"])
        for line in parley.api("GET", consent).json()["ledger"]
    ]  # fmt: skip
    assert ledger == [
        ("sms", "marketing", "grant", True, "dialogue", "yes"),
        ("sms", "marketing", "grant", False, "sms_keyword", "YES"),
        ("sms", "marketing", "withdraw", False, "dialogue", "stop texting me"),
        ("sms", "transactional", "withdraw", False, "dialogue", "stop texting me"),
    ]
    wording = parley.api("GET", consent).json()["ledger"][0]["wording"]
    assert wording == question


def parley_question(slot: str) -> str:
    """What the lead form asks for `slot` (bot/domain/lead.yml)."""
    return {
        "work_email": "What's your work e-mail address, Ada?",
        "company": "Which company are you with?",
        "team_size": "How many people would use Brightdesk? A rough number is fine.",
        "use_case": "What would you mainly use it for? For example: customer support, "
        "sales inbox, or internal help desk.",
        "timeline": "When are you hoping to get started?",
    }[slot]


def test_asking_for_a_person_pauses_the_bot_until_the_hand_off_is_closed(parley: Parley) -> None:
    me = "e2e-handoff"
    parley.say(me, "hello")
    [started] = parley.say(me, "I want to talk to a person")
    assert "person" in started
    assert parley.say(me, "hello? anyone?") == []

    handoffs = parley.api("GET", "/api/v1/handoffs", params={"status": "open"}).json()["items"]
    [mine] = [h for h in handoffs if h["conversation_id"] == me]
    closed = parley.api("POST", f"/api/v1/handoffs/{mine['id']}/close")
    assert closed.status_code == 200, closed.text
    assert parley.say(me, "are you a bot?") == [
        "Yes, I'm a bot: Brightdesk's virtual assistant, not a person. "
        'Say "talk to a person" whenever you\'d like one.'
    ]


def test_two_misunderstandings_in_a_row_offer_a_person(parley: Parley) -> None:
    me = "e2e-confused"
    parley.say(me, "hello")
    [first] = parley.say(me, "xqzv blorp fnord")
    [second] = parley.say(me, "wibble plonk zzyzx")
    assert first != second
    assert "person" in second
    [handed_over] = parley.say(me, "yes")
    assert "I'll stay quiet" in handed_over
    handoffs = parley.api("GET", "/api/v1/handoffs", params={"status": "open"}).json()["items"]
    [mine] = [h for h in handoffs if h["conversation_id"] == me]
    assert mine["reason"] == "repeated_failure"


def test_the_internal_apis_refuse_callers_without_a_token(parley: Parley) -> None:
    assert requests.get(f"{parley.rasa}/status", timeout=10).status_code == 401
    assert requests.post(f"{parley.actions}/webhook", json={}, timeout=10).status_code == 401
    assert requests.get(f"{parley.backend}/api/v1/profiles/x", timeout=10).status_code == 401


def test_no_secret_or_token_reaches_the_output(parley: Parley) -> None:
    output = parley.output()
    assert parley.admin_token not in output
    assert parley.rasa_token not in output
    assert "pk_" not in output


@pytest.mark.stops_parley
def test_ctrl_c_stops_all_three_processes(parley: Parley) -> None:
    parley.ctrl_c()
    parley.process.wait(timeout=60)  # make reports the interrupt; parley stops cleanly
    output = parley.output()
    for name in ("rasa", "actions", "backend"):
        assert f"[parley] stopping {name}" in output
    assert output.rstrip().endswith("[parley] stopped")
    for url in (parley.rasa, parley.backend, parley.actions):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
