"""End to end: a follow-up text is in the person's conversation (recorded the way the
scheduler records it, through Rasa's HTTP API), so a texted "yes" is read as yes to
what the text asked, even when the conversation's session had expired."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import requests

from backend.conversations.rasa_client import RasaClient
from tests.e2e.conftest import Parley
from tests.e2e.test_sms import parley_sms

OFFER = "Want a 30-minute walkthrough before your trial ends? Reply YES and I'll find a time."


def record_follow_up(parley: Parley, number: str) -> None:
    """What the scheduler does before a follow-up with `asks: demo` is texted."""

    async def record() -> None:
        client = RasaClient(parley.rasa, parley.rasa_token)
        try:
            await client.record_follow_up(number, OFFER, "demo", {})
        finally:
            await client.close()

    asyncio.run(record())


def test_yes_to_a_texted_demo_offer_gets_demo_times(parley: Parley) -> None:
    number = "+14155550160"
    record_follow_up(parley, number)
    replies = parley_sms(parley, number, "yes")
    assert any(r.startswith("Here are the next free times") for r in replies), replies


def test_no_to_a_texted_demo_offer_is_taken_gracefully(parley: Parley) -> None:
    number = "+14155550161"
    record_follow_up(parley, number)
    assert parley_sms(parley, number, "no thanks") == [
        "No problem. If you have a question later, just text me here."
    ]


def test_a_yes_days_later_in_a_new_session_still_answers_the_offer(parley: Parley) -> None:
    number = "+14155550162"
    # The person last wrote two days ago: their session has expired.
    two_days_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
    earlier = [
        {"event": "action", "name": "action_session_start", "timestamp": two_days_ago},
        {"event": "session_started", "timestamp": two_days_ago},
        {"event": "slot", "name": "disclosed", "value": True, "timestamp": two_days_ago},
        {"event": "action", "name": "action_listen", "timestamp": two_days_ago},
        {"event": "user", "text": "hi", "timestamp": two_days_ago,
         "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []}},
        {"event": "action", "name": "action_listen", "timestamp": two_days_ago},
    ]  # fmt: skip
    appended = requests.post(
        f"{parley.rasa}/conversations/{number}/tracker/events",
        params={"token": parley.rasa_token}, json=earlier, timeout=10,
    )  # fmt: skip
    appended.raise_for_status()
    record_follow_up(parley, number)
    replies = parley_sms(parley, number, "yes")
    assert any(r.startswith("Here are the next free times") for r in replies), replies
