"""E-mail through the shared `make run`: the bot asks for e-mail consent, the backend
sends the double opt-in e-mail over SMTP to the local mail sink, and its link, opened in
Chromium, confirms; the marketing e-mail that follows carries an unsubscribe link that,
pressed in Chromium, withdraws the consent."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import requests
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import Parley
from tests.e2e.test_webchat import browser

__all__ = ["browser"]  # the module's Chromium, shared with the web chat tests' fixture


def emails_to(parley: Parley, address: str, wanted: int) -> list[dict[str, Any]]:
    """The e-mails the sink holds for `address`, once there are `wanted` of them."""
    deadline = time.monotonic() + 30
    while True:
        response = requests.get(f"{parley.mail}/sink/emails", timeout=10)
        response.raise_for_status()
        found = [e for e in response.json()["emails"] if address in e["rcpt_tos"]]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def daytime_zone() -> str:
    """A time zone where it is the middle of the day now: marketing is not held."""
    now = datetime.now(UTC)
    for name in ("Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo",
                 "Asia/Kolkata", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Dubai"):  # fmt: skip
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 19:
            return name
    raise AssertionError("no zone in the list is in its day")  # pragma: no cover


def test_a_person_subscribes_by_email_confirms_in_a_browser_and_unsubscribes(
    parley: Parley, browser: Browser
) -> None:
    me = f"e2e-email-{uuid.uuid4().hex[:8]}"
    address = f"{me}@example.com"
    parley.say(me, "hi")
    assert parley.say(me, '/subscribe{"channel": "email"}') == ["What's your e-mail address?"]
    [question] = parley.say(me, address)
    assert question.startswith("Can Brightdesk e-mail you")
    [pending] = parley.say(me, "yes")
    assert pending.startswith("Almost done: we've e-mailed") and address in pending, {
        k: v for k, v in parley.slots(me).items() if "consent" in k or "profile" in k
    }

    profile_id = parley.slots(me)["profile_id"]
    check = f"/api/v1/profiles/{profile_id}/consent/email/marketing"
    assert parley.api("GET", check).json()["state"] == "pending"
    [asked] = emails_to(parley, address, 1)
    assert asked["subject"] == "Please confirm: e-mails from Brightdesk"
    link = re.search(r"(http\S+/email/confirm/\S+)", asked["text"])
    assert link, asked["text"]

    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(link.group(1))
        assert parley.api("GET", check).json()["state"] == "pending"  # opening is not agreeing
        page.get_by_role("button", name="Yes, send me e-mails").click()
        expect(page.get_by_role("heading")).to_have_text("You are subscribed")
        assert parley.api("GET", check).json()["allowed"] is True

        zone = daytime_zone()
        patched = parley.api(
            "PATCH", f"/api/v1/profiles/{profile_id}", json={"attributes": {"timezone": zone}}
        )
        assert patched.status_code == 200, patched.text
        sent = parley.api(
            "POST", "/api/v1/messages",
            json={"channel": "email", "to": address, "subject": "Spring news",
                  "body": "Our spring release is out.", "purpose": "marketing"},
        )  # fmt: skip
        assert sent.status_code == 201, sent.text
        [_, news] = emails_to(parley, address, 2)
        assert news["subject"] == "Spring news"
        headers = dict((name.lower(), value) for name, value in news["headers"])
        assert headers["list-unsubscribe-post"] == "List-Unsubscribe=One-Click"
        unsubscribe = re.search(r"Unsubscribe: (\S+)", news["text"])
        assert unsubscribe, news["text"]

        page.goto(unsubscribe.group(1))
        page.get_by_role("button", name="Unsubscribe").click()
        expect(page.get_by_role("heading")).to_have_text("You are unsubscribed")
        assert parley.api("GET", check).json()["allowed"] is False
    finally:
        context.close()

    # They answer the e-mail: the sink forwards the reply as Mailgun's inbound route
    # does, signed with the key `parley run` gave both; it waits for an agent.
    replied = requests.post(
        f"{parley.mail}/sink/emails/{news['id']}/reply", json={"text": "Why did I get this?"},
        timeout=30,
    )  # fmt: skip
    assert replied.status_code == 201, replied.text
    handoff = parley.api("GET", f"/api/v1/handoffs/{replied.json()['handoff_id']}").json()
    assert (handoff["conversation_id"], handoff["channel"]) == (address, "email")
