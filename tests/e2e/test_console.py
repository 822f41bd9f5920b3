"""End to end: the console's agent inbox in real Chromium, against the shared `parley
run`. An agent made with `parley user create` signs in and sees a web chat visitor's
hand-off appear live; reads the transcript, claims it and replies, and the reply reaches
the visitor's open page (another browser context) and stays in its history; hands back,
and the bot answers the visitor's next message. The same for a person texting through
the local Twilio: the agent's reply reaches their phone. And the API reference: Swagger
UI on the backend's OpenAPI document calls a route with a token."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import PARLEY, Parley
from tests.e2e.test_webchat import REPLY_MS, Chat, browser, demo

__all__ = ["browser"]  # the module's Chromium, shared with the web chat tests' fixture
PASSWORD = "e2e console password"


@pytest.fixture
def agent(parley: Parley, browser: Browser) -> Iterator[Page]:
    """An agent's browser, signed in to the console through its sign-in page."""
    email = f"agent-{uuid.uuid4().hex[:8]}@example.com"
    subprocess.run(
        [str(PARLEY), "user", "create", "--email", email, "--role", "agent", "--password-stdin"],
        env=parley.env, input=PASSWORD + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(REPLY_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{parley.backend}/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/console/inbox$"))
    expect(page.get_by_text(email)).to_be_visible()
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture
def visitor(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(REPLY_MS)
    yield page
    context.close()


def answer(agent: Page, row_text: str, reply: str) -> None:
    """Open the waiting conversation whose row shows `row_text`, claim it, and reply."""
    row = agent.locator("table.queue tr", has_text=row_text)
    row.get_by_role("link", name="Open").click()
    expect(agent.locator(".transcript")).to_contain_text("I want to talk to a person")
    agent.get_by_role("button", name="Claim").click()
    expect(agent.locator(".claimed-by")).to_contain_text("agent-")
    agent.get_by_label(re.compile("^Reply (on|by)")).fill(reply)
    agent.get_by_role("button", name="Send").click()
    expect(agent.locator(".transcript .line.agent", has_text=reply)).to_be_visible()


def test_an_agent_answers_a_web_chat_visitor_live_and_hands_back(
    parley: Parley, agent: Page, visitor: Page
) -> None:
    visitor.goto(demo(parley))
    chat = Chat(visitor)
    chat.open()
    chat.say("I want to talk to a person")
    expect(chat.bot(re.compile("person"))).to_be_visible()
    visitor_row = f"visitor {chat.session()['session_id'][:8]}"

    # The agent's inbox, open all along, shows the visitor without a reload.
    row = agent.locator("table.queue tr", has_text=visitor_row)
    expect(row).to_be_visible()
    expect(row).to_contain_text("webchat")
    expect(agent).to_have_title(re.compile(r"^\(\d+\) Inbox"))

    answer(agent, visitor_row, "Hi, I'm Sam from Brightdesk. How can I help?")
    expect(chat.bot("Hi, I'm Sam from Brightdesk. How can I help?")).to_be_visible()
    visitor.reload()
    Chat(visitor).open()
    expect(Chat(visitor).bot("Hi, I'm Sam from Brightdesk. How can I help?")).to_be_visible()

    agent.get_by_role("button", name="Hand back to the bot").click()
    expect(agent.get_by_text("Handed back")).to_be_visible()
    chat = Chat(visitor)
    chat.say("what can you do")
    expect(chat.bot("I can tell you about Brightdesk's plans")).to_be_visible()


def test_an_agent_answers_a_texter_on_their_phone(parley: Parley, agent: Page) -> None:
    number = "+12025550177"
    parley.text(number, "I want to talk to a person")
    agent.goto(f"{parley.backend}/console/inbox")
    answer(agent, "+1 202-555-0177", "Hi, Sam here by text.")
    deadline = time.monotonic() + 30
    while "Hi, Sam here by text." not in parley.texts_to(number):
        assert time.monotonic() < deadline, parley.texts_to(number)
        time.sleep(0.5)
    agent.get_by_role("button", name="Hand back to the bot").click()
    expect(agent.get_by_text("Handed back")).to_be_visible()


def test_the_api_reference_calls_a_route_with_a_token(parley: Parley, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto(f"{parley.backend}/api/v1/docs")
    expect(page.get_by_role("heading", name=re.compile("Parley backend API"))).to_be_visible()

    page.get_by_role("button", name="Authorize").first.click()
    page.get_by_label("auth-bearer-value").fill(parley.admin_token)
    page.get_by_role("button", name="Apply credentials").click()
    page.locator(".auth-btn-wrapper").get_by_role("button", name="Close").click()

    operation = page.locator("#operations-handoffs-list_handoffs")
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    answer = operation.locator(".live-responses-table")
    expect(answer).to_contain_text('"items"')
    expect(answer.locator("tbody .response-col_status").first).to_have_text("200")
    # Everything the page loaded came from the backend itself (no CDN, no validator).
    assert asked and all(url.startswith(parley.backend) for url in asked), asked
    context.close()


def console_user(parley: Parley, browser: Browser, role: str) -> Page:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.com"
    subprocess.run(
        [str(PARLEY), "user", "create", "--email", email, "--role", role, "--password-stdin"],
        env=parley.env, input=PASSWORD + "\n", capture_output=True, text=True, check=True,
    )  # fmt: skip
    page = browser.new_context().new_page()
    page.set_default_timeout(REPLY_MS)
    page.goto(f"{parley.backend}/console/sign-in")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(email)).to_be_visible()
    return page


def test_a_marketer_finds_a_person_builds_a_segment_pauses_a_sequence_and_an_admin_erases(
    parley: Parley, browser: Browser
) -> None:
    last_name = f"Quill{uuid.uuid4().hex[:6]}"
    person = parley.api(
        "POST", "/api/v1/identify",
        json={"channel": "sms", "address": "(415) 555-2698",
              "attributes": {"first_name": "Wren", "last_name": last_name}},
    ).json()["profile"]  # fmt: skip
    for action, reply in (("grant", "yes please"), ("confirm", "YES")):
        parley.api(
            "POST", f"/api/v1/profiles/{person['id']}/consent",
            json={"channel": "sms", "purpose": "marketing", "action": action,
                  "source": "sms_keyword", "wording": "Texts about offers? Reply YES.",
                  "reply": reply},
        ).raise_for_status()  # fmt: skip

    parley.say(f"e2e-overview-{last_name}", "hi")  # a conversation on Rasa's REST channel
    marketer = console_user(parley, browser, "marketer")
    marketer.get_by_role("link", name="People").click()
    marketer.get_by_label("Find a person by name, e-mail or phone").fill(f"wren {last_name}")
    marketer.get_by_role("link", name=f"Wren {last_name}").click()  # results came as typed
    expect(marketer.locator(".timeline")).to_contain_text("Texts about offers? Reply YES.")
    expect(marketer.locator(".states")).to_contain_text("sms marketing: granted")
    expect(marketer.get_by_text("Privacy requests")).to_have_count(0)

    # Segments: write a rule and watch its count change as it is typed.
    for n, seats in enumerate((5, 80)):
        parley.api(
            "POST", "/api/v1/identify",
            json={"channel": "web", "address": f"{last_name}-{n}",
                  "attributes": {"first_name": "Seg", "e2e_tag": last_name, "seats": seats}},
        ).raise_for_status()  # fmt: skip
    marketer.get_by_role("link", name="Segments").click()
    marketer.get_by_role("link", name="New segment").click()
    marketer.get_by_label("Name").fill(last_name.lower())
    rule = (
        "rule:\n  all:\n    - {field: attributes.e2e_tag, op: eq, value: %s}\n"
        "    - {field: attributes.seats, op: gte, value: %d}\n"
    )
    editor = marketer.get_by_label(re.compile("^Rule, as in"))
    editor.fill(rule % (last_name, 1))
    expect(marketer.locator(".segment-count")).to_have_text("2")
    editor.fill(rule % (last_name, 50))
    expect(marketer.locator(".segment-count")).to_have_text("1")
    marketer.get_by_role("button", name="Save").click()
    expect(marketer.get_by_text(f"Saved segment {last_name.lower()}.")).to_be_visible()
    expect(marketer.locator("tr", has_text=last_name.lower()).locator(".count")).to_have_text("1")

    errors: list[str] = []
    marketer.on("pageerror", lambda error: errors.append(str(error)))
    # The overview's charts draw from the record of this run's conversations.
    marketer.get_by_role("link", name="Overview").click()
    expect(marketer.get_by_role("img", name="Conversations per day by channel")).to_be_visible()
    assert marketer.evaluate("() => Chart.getChart('by-channel').data.datasets.length") >= 1
    marketer.get_by_role("link", name="Conversations").click()
    marketer.get_by_label("Channel").select_option("rest")
    marketer.get_by_role("button", name="Show").click()
    expect(marketer.locator("table.queue tbody tr").first).to_contain_text("rest")

    # Sequences: pause one, read its funnel chart, resume it.
    marketer.get_by_role("link", name="Sequences").click()
    row = marketer.locator("table.queue tr", has_text="trial-nurture")
    row.get_by_role("button", name="Pause").click()
    expect(row.locator(".sequence-status")).to_contain_text("paused by marketer-")
    row.get_by_role("link", name="trial-nurture").click()
    funnel = marketer.get_by_role("img", name=re.compile("How many people reached each"))
    expect(funnel).to_be_visible()
    assert marketer.evaluate("() => Chart.getChart('funnel') !== undefined")
    marketer.get_by_role("button", name="Resume").click()
    expect(marketer.locator("h1 .sequence-status")).to_have_text("running")
    assert errors == [], errors
    marketer.context.close()

    admin = console_user(parley, browser, "admin")
    admin.goto(f"{parley.backend}/console/people?query={last_name}")
    admin.get_by_role("link", name=f"Wren {last_name}").click()
    with admin.expect_download() as download:
        admin.get_by_role("link", name="Export everything (JSON)").click()
    assert f"person-{person['id']}.json" == download.value.suggested_filename
    admin.get_by_label(re.compile("Type ERASE to confirm")).fill("ERASE")
    admin.get_by_role("button", name="Erase").click()
    expect(admin.get_by_text("The person was erased everywhere.")).to_be_visible()
    assert parley.api("GET", f"/api/v1/profiles/{person['id']}").status_code == 404
    admin.context.close()
