"""End to end by text: a person texts the bot through the local Twilio emulator that
`parley run` starts (with `parley sms`, as the README shows); the SMS channel, the bot
and the backend's one door answer by text."""

from __future__ import annotations

import subprocess
import time

import requests

from tests.e2e.conftest import PARLEY, Parley

NUMBER = "+14155550142"


def parley_sms(parley: Parley, number: str, text: str) -> list[str]:
    """What `parley sms` prints back: the bot's texts, one line each."""
    result = subprocess.run(
        [str(PARLEY), "sms", number, text], env=parley.env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(f" < {text}")
    return [line.split(" > ", 1)[1] for line in lines[1:]]


def test_a_person_texts_the_bot_and_it_answers_by_text(parley: Parley) -> None:
    disclosure, greeting = parley_sms(parley, "(415) 555-0142", "hi")
    assert disclosure.startswith("I'm a bot")
    assert greeting == "Hi! What's your name?"
    assert parley_sms(parley, NUMBER, "my name is Sam") == [
        "Nice to meet you, Sam! How can I help you today?"
    ]
    found = parley.api("POST", "/api/v1/identify", json={"channel": "sms", "address": NUMBER})
    profile = found.json()["profile"]
    assert profile["first_name"] == "Sam"
    texts = parley.api("GET", f"/api/v1/profiles/{profile['id']}/messages").json()["items"]
    assert [t["direction"] for t in texts[:2]] == ["outbound", "inbound"]
    assert texts[0]["status"] in ("sent", "delivered")


def test_help_and_stop_are_answered_before_the_bot_and_stop_silences_it(parley: Parley) -> None:
    number = "+14155550143"
    [help_text] = parley_sms(parley, number, "HELP")
    assert help_text.startswith("Brightdesk:") and "Reply STOP" in help_text
    [stopped] = parley_sms(parley, number, "stop")
    assert "unsubscribed" in stopped

    found = parley.api("POST", "/api/v1/identify", json={"channel": "sms", "address": number})
    profile_id = found.json()["profile"]["id"]
    check = parley.api("GET", f"/api/v1/profiles/{profile_id}/consent/sms/transactional")
    assert check.json()["state"] == "withdrawn"

    # The bot still hears the person, but its answer is not texted to them.
    parley.text(number, "hello?")
    deadline = time.monotonic() + 60
    while not bot_answered(parley, number, "hello?"):
        assert time.monotonic() < deadline, "the bot never answered"
        time.sleep(0.5)
    assert len(parley.texts_to(number)) == 2


def bot_answered(parley: Parley, sender: str, text: str) -> bool:
    """Has the bot answered `text` (and so tried to send its answer) in Rasa's record?"""
    response = requests.get(
        f"{parley.rasa}/conversations/{sender}/tracker",
        params={"token": parley.rasa_token}, timeout=10,
    )  # fmt: skip
    events = response.json().get("events", []) if response.ok else []
    said = [i for i, e in enumerate(events) if e["event"] == "user" and e.get("text") == text]
    return bool(said) and any(e["event"] == "bot" for e in events[said[-1] :])
