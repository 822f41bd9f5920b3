"""End to end by phone: the local Twilio emulator that `parley run` starts plays a
caller against the voice channel, the real bot and the backend."""

from __future__ import annotations

from typing import Any

import requests

from tests.e2e.conftest import Parley

CALLER = "+14155550177"


def call(parley: Parley, path: str, body: dict[str, str]) -> dict[str, Any]:
    response = requests.post(f"{parley.twilio}/emulator/{path}", json=body, timeout=120)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


def test_a_caller_talks_with_the_bot_and_is_the_same_person_by_text(parley: Parley) -> None:
    ringing = call(parley, "call", {"from": CALLER, "to": "+15005550006"})
    assert ringing["webhook_status"] == 200 and not ringing["hung_up"]
    disclosure, greeting = ringing["said"][:2]
    assert disclosure.startswith("I'm a bot") and greeting == "Hi! What's your name?"

    named = call(parley, f"call/{ringing['sid']}/gather", {"speech": "my name is Grace"})
    assert named["said"][0] == "Nice to meet you, Grace! How can I help you today?"

    silent = call(parley, f"call/{ringing['sid']}/gather", {})
    assert silent["said"][0].startswith("Sorry, I didn't catch that.")
    bye = call(parley, f"call/{ringing['sid']}/gather", {"speech": "bye"})
    assert bye["hung_up"] is True

    # A text from the same number is the same person, already known by name.
    texted = parley.api("POST", "/api/v1/identify", json={"channel": "sms", "address": CALLER})
    profile = texted.json()["profile"]
    assert profile["first_name"] == "Grace"
    assert {i["kind"] for i in profile["identities"]} == {"sms", "voice"}
