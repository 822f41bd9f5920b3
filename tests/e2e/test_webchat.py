"""End to end: the web chat in a real browser (Debian's Chromium, driven by Playwright),
against the shared `parley run` (conftest.py). A visitor opens the demo page, chats,
presses a button, reloads and sees the conversation again, and a message the bot sends
later reaches the open page; on a phone-sized screen, and with the keyboard only. Then
the socket itself: only a token the backend signed, for its own session, gets in.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from backend.core.settings import Settings
from backend.webchat.sessions import AUDIENCE, signing_secret
from tests.e2e.conftest import Parley

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The bot's answers (model inference, actions, the backend) take a few seconds at most.
REPLY_MS = 30_000
DISCLOSURE = "I'm a bot: Brightdesk's virtual assistant."


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'scripts/install chromium' (Debian's package)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(REPLY_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors


class Chat:
    """The widget on a page, found the way a person finds it: by role and label."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.launcher = page.get_by_role("button", name=re.compile("^(Open chat|Chat is open)"))
        self.panel = page.get_by_role("dialog", name=re.compile("Chat with"))
        self.log = page.get_by_role("list", name="Conversation")
        self.input = page.get_by_label("Your message")

    def open(self) -> None:
        self.launcher.click()
        expect(self.panel).to_be_visible()

    def bot(self, text: str | re.Pattern[str]) -> Locator:
        return self.log.locator("li.msg.bot").filter(has_text=text)

    def user(self, text: str) -> Locator:
        return self.log.locator("li.msg.user").filter(has_text=text)

    def say(self, text: str) -> None:
        self.input.fill(text)
        self.input.press("Enter")

    def texts(self) -> list[str]:
        return [t.strip() for t in self.log.locator("li.msg").all_inner_texts()]

    def session(self) -> dict[str, Any]:
        stored = self.page.evaluate(
            "() => Object.entries(localStorage).find(([k]) => k.startsWith('parley-chat:'))"
        )
        assert stored, "the widget keeps its session in localStorage"
        session: dict[str, Any] = json.loads(stored[1])
        return session


def demo(parley: Parley) -> str:
    return f"{parley.backend}/chat/demo"


def trigger_intent(parley: Parley, session_id: str, intent: str) -> requests.Response:
    """Rasa's API making the bot act in the person's conversation, sending through the
    channel they last wrote on: what a caller holding Rasa's token could try."""
    return requests.post(
        f"{parley.rasa}/conversations/{session_id}/trigger_intent",
        params={"token": parley.rasa_token, "output_channel": "latest"},
        json={"name": intent},
        timeout=60,
    )


def test_a_visitor_chats_presses_a_button_reloads_and_gets_a_later_message(
    parley: Parley, page: Page
) -> None:
    page.goto(demo(parley))
    chat = Chat(page)
    expect(chat.panel).to_be_hidden()
    chat.open()
    expect(chat.input).to_be_focused()
    expect(chat.bot(DISCLOSURE)).to_be_visible()

    chat.say("hi")
    expect(chat.bot("Hi! What's your name?")).to_be_visible()
    chat.say("my name is Ada")
    expect(chat.bot("Nice to meet you, Ada! How can I help you today?")).to_be_visible()

    chat.say("what can you do")
    expect(chat.bot("I can tell you about Brightdesk's plans")).to_be_visible()
    chat.log.get_by_role("button", name="Plans and prices").click()
    expect(chat.user("Plans and prices")).to_be_visible()
    expect(chat.bot(re.compile(r"^We offer Starter"))).to_be_visible()
    chat.log.get_by_role("button", name="Team", exact=True).click()
    expect(chat.bot(re.compile(r"^Team: "))).to_be_visible()
    before_reload = chat.texts()
    assert before_reload[:3] == [DISCLOSURE + ' A person can take over whenever you like: just '
                                 'say "talk to a person".', "hi", "Hi! What's your name?"]  # fmt: skip
    assert "/session_start" not in before_reload

    page.reload()
    chat = Chat(page)
    chat.open()
    expect(chat.bot(re.compile(r"^Team: "))).to_be_visible()
    assert chat.texts() == before_reload  # titles, not payloads, for the buttons pressed
    expect(chat.log.get_by_role("button", name="Book a demo")).to_be_visible()

    # Rasa's API, even with its token, cannot push a message to the page: only the one
    # door can (consent and the guards checked, the message recorded).
    page.keyboard.press("Escape")
    expect(chat.panel).to_be_hidden()
    session_id = chat.session()["session_id"]
    pushed = trigger_intent(parley, session_id, "greet")
    assert pushed.status_code == 200, pushed.text
    page.wait_for_timeout(2000)
    expect(page.get_by_role("button", name="Open chat", exact=True)).to_be_visible()
    # Parley writes later (a message through the web door) while the panel is closed:
    # it arrives, and the launcher says so.
    sent = parley.api(
        "POST", "/api/v1/messages",
        json={"channel": "web", "to": session_id, "purpose": "transactional",
              "body": "Your demo link is ready, Ada."},
    )  # fmt: skip
    assert sent.status_code == 201, sent.text
    expect(page.get_by_role("button", name="Open chat (1 new)")).to_be_visible()
    chat.open()
    expect(chat.bot("Your demo link is ready, Ada.")).to_be_visible()
    assert "Welcome back, Ada! How can I help you today?" not in chat.texts()


def test_a_second_tab_of_the_same_visitor_sees_both_sides_of_the_conversation(
    parley: Parley, browser: Browser
) -> None:
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        first.goto(demo(parley))
        one = Chat(first)
        one.open()
        expect(one.bot(DISCLOSURE)).to_be_visible(timeout=REPLY_MS)
        second.goto(demo(parley))
        two = Chat(second)
        two.open()
        expect(two.bot(DISCLOSURE)).to_be_visible(timeout=REPLY_MS)
        one.say("hello")
        expect(two.user("hello")).to_be_visible(timeout=REPLY_MS)
        expect(two.bot("Hi! What's your name?")).to_be_visible(timeout=REPLY_MS)
    finally:
        context.close()


def test_the_chat_works_with_the_keyboard_alone(parley: Parley, page: Page) -> None:
    page.goto(demo(parley))
    chat = Chat(page)
    page.keyboard.press("Tab")
    expect(chat.launcher).to_be_focused()
    page.keyboard.press("Enter")
    expect(chat.panel).to_be_visible()
    expect(chat.input).to_be_focused()
    expect(chat.log).to_have_attribute("aria-live", "polite")
    expect(chat.bot(DISCLOSURE)).to_be_visible()

    page.keyboard.type("hi")
    page.keyboard.press("Enter")
    expect(chat.bot("Hi! What's your name?")).to_be_visible()
    expect(chat.input).to_be_focused()

    # Tab leaves the input for the Send button, Shift+Tab comes back.
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Send")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(chat.input).to_be_focused()

    page.keyboard.press("Escape")
    expect(chat.panel).to_be_hidden()
    expect(chat.launcher).to_be_focused()


def test_what_a_visitor_types_is_shown_as_text_and_only_web_links_become_links(
    parley: Parley, page: Page
) -> None:
    page.goto(demo(parley))
    chat = Chat(page)
    chat.open()
    expect(chat.bot(DISCLOSURE)).to_be_visible()
    typed = (
        "<img src=x onerror=window.pwned=1> see https://example.com/a?b=1. or javascript:alert(1)"
    )
    chat.say(typed)
    expect(chat.user("see https://example.com/a?b=1.")).to_have_text(typed)
    links = chat.user("see").get_by_role("link")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.com/a?b=1")
    expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    assert page.evaluate("() => window.pwned") is None


def test_on_a_phone_the_chat_fills_the_screen(parley: Parley, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True,
                                  has_touch=True)  # fmt: skip
    try:
        page = context.new_page()
        page.goto(demo(parley))
        chat = Chat(page)
        chat.launcher.tap()
        expect(chat.panel).to_be_visible()
        assert chat.panel.bounding_box() == {"x": 0, "y": 0, "width": 375, "height": 667}
        expect(chat.launcher).to_be_hidden()
        expect(chat.bot(DISCLOSURE)).to_be_visible(timeout=REPLY_MS)
        chat.say("hi")
        expect(chat.bot("Hi! What's your name?")).to_be_visible(timeout=REPLY_MS)
        send = page.get_by_role("button", name="Send").bounding_box()
        assert send is not None and send["y"] + send["height"] <= 667
        page.get_by_role("button", name="Close chat").tap()
        expect(chat.launcher).to_be_visible()
    finally:
        context.close()


# --- the socket: who gets into which conversation -------------------------------------


def start_session(parley: Parley) -> dict[str, Any]:
    response = requests.post(f"{parley.backend}/chat/sessions", json={}, timeout=10)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def user_texts(parley: Parley, session_id: str) -> list[str]:
    response = requests.get(
        f"{parley.rasa}/conversations/{session_id}/tracker",
        params={"token": parley.rasa_token},
        timeout=10,
    )
    response.raise_for_status()
    return [e["text"] for e in response.json()["events"] if e["event"] == "user"]


async def speak(parley: Parley, auth: dict[str, Any], session_id: str, text: str) -> list[str]:
    """Connect to Rasa's socket as the widget does, say `text` in `session_id`, and
    return the socket.io packets the server sent back within a few seconds."""
    url = parley.rasa.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
    received: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await ws.receive_str()  # Engine.IO open
        await ws.send_str("40" + json.dumps(auth))
        answer = await ws.receive_str()
        received.append(answer)
        if not answer.startswith("40{"):
            return received
        request = {"session_id": session_id}
        await ws.send_str("42" + json.dumps(["session_request", request]))
        await ws.send_str("42" + json.dumps(["user_uttered", {**request, "message": text}]))
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            try:
                packet = await ws.receive_str(timeout=deadline - time.monotonic())
            except (TimeoutError, asyncio.TimeoutError):
                break
            if packet != "2":
                received.append(packet)
    return received


def in_own_loop(work: Coroutine[Any, Any, T]) -> T:
    """Runs `work` on an event loop of its own thread (Playwright's sync API keeps one
    running in this thread)."""
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(asyncio.run, work).result()


def test_only_a_token_the_backend_signed_for_its_own_session_reaches_a_conversation(
    parley: Parley,
) -> None:
    ada, bob = start_session(parley), start_session(parley)
    secret = signing_secret(Settings(var_dir=Path(parley.env["PARLEY_VAR_DIR"])))
    now = int(time.time())

    def signed(key: str, **claims: Any) -> str:
        body = {"sub": ada["session_id"], "aud": AUDIENCE, "iat": now, "exp": now + 600}
        return jwt.encode(body | claims, key, algorithm="HS256")

    refused = {
        "missing": {},
        "forged": {"token": signed("a-guess-at-the-secret-" + "x" * 20)},
        "expired": {"token": signed(secret, iat=now - 7200, exp=now - 3600)},
    }
    for case, auth in refused.items():
        [answer] = in_own_loop(speak(parley, auth, ada["session_id"], f"I am {case}"))
        assert answer == '44{"message":"invalid session token"}', case

    # Bob's valid token, claiming Ada's session: connected, but nothing reaches Ada.
    packets = in_own_loop(speak(parley, {"token": bob["token"]}, ada["session_id"], "I am Bob"))
    assert packets[0].startswith("40{") and len(packets) == 1, packets

    packets = in_own_loop(speak(parley, {"token": ada["token"]}, ada["session_id"], "hi"))
    assert '42["session_confirm","' + ada["session_id"] + '"]' in packets
    assert any(p.startswith('42["bot_uttered"') and "What's your name?" in p for p in packets)

    assert user_texts(parley, ada["session_id"]) == ["hi"]
    assert user_texts(parley, bob["session_id"]) == []
