"""The console's sign-in and agent inbox over real HTTP: cookies as a browser keeps them
(Secure, HttpOnly, SameSite=Lax, only for /console), CSRF tokens on every change, the
lock-out, roles from the API's permission table, the live queue's server-sent events,
and an agent claiming, answering a texter (at the Twilio emulator) and handing back."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from sqlalchemy import select

from backend.api.keys import SESSIONS
from backend.console import users
from backend.core.clock import FixedClock
from backend.core.models import AuditEntry
from tests.backend.conftest import StartTexting, TextingBackend
from tests.backend.rasa_trackers import RASA_TOKEN, RasaTrackers

PASSWORD = "correct horse battery"
NUMBER = "+12025550143"


class Browser:
    """One person's browser: its own cookies, the CSRF token of the last page it read."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[url])
        )
        self.csrf = ""

    async def get(self, path: str, **headers: str) -> tuple[int, str, aiohttp.ClientResponse]:
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        async with self.http.get(self.url + path, headers=sent, allow_redirects=False) as r:
            text = await r.text()
        if found := re.search(r'name="csrf" value="([^"]+)"', text):
            self.csrf = found.group(1)
        return r.status, text, r

    async def post(
        self, path: str, form: dict[str, str] | None = None, csrf: bool = True, **headers: str
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        data = {**(form or {}), **({"csrf": self.csrf} if csrf else {})}
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        async with self.http.post(
            self.url + path, data=data, headers=sent, allow_redirects=False
        ) as r:
            return r.status, await r.text(), r

    async def sign_in(self, email: str, password: str = PASSWORD, next_: str = "") -> int:
        await self.get("/console/sign-in")
        status, _, response = await self.post(
            "/console/sign-in", {"email": email, "password": password, "next": next_}
        )
        self.location = response.headers.get("Location", "")
        return status


@dataclass
class Console:
    backend: TextingBackend
    rasa: RasaTrackers
    clock: FixedClock
    open: Callable[[], Browser]

    async def user(self, email: str, role: str) -> None:
        async with self.backend.app[SESSIONS].begin() as session:
            await users.create(session, self.clock, email, role, PASSWORD)

    async def handed_off(self, conversation: str, channel: str = "sms") -> dict[str, Any]:
        return await self.backend.api.hand_off(conversation, channel, first_name="Dana")


@pytest.fixture
async def console(
    start_texting: StartTexting,
    clock: FixedClock,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> AsyncIterator[Console]:
    rasa = RasaTrackers()
    server = await aiohttp_server(rasa.app())
    backend = await start_texting(
        scheduler_enabled=False, rasa_api_url=str(server.make_url("")).rstrip("/"),
        rasa_token=SecretStr(RASA_TOKEN),
    )  # fmt: skip
    browsers: list[Browser] = []

    def open_browser() -> Browser:
        browsers.append(Browser(backend.url))
        return browsers[-1]

    yield Console(backend, rasa, clock, open_browser)
    for browser in browsers:
        await browser.http.close()


async def test_pages_ask_for_sign_in_and_the_cookie_is_kept_safe(console: Console) -> None:
    await console.user("Agent@Example.com", "agent")
    browser = console.open()
    status, _, response = await browser.get("/console/inbox")
    assert status == 303
    assert response.headers["Location"] == "/console/sign-in?next=/console/inbox"

    assert await browser.sign_in("agent@example.com", next_="/console/inbox") == 303
    assert browser.location == "/console/inbox"
    [cookie] = [c for c in browser.http.cookie_jar if c.key == "parley_console"]
    assert cookie["httponly"] and cookie["secure"] and cookie["samesite"] == "Lax"
    assert cookie["path"] == "/console"
    status, page, response = await browser.get("/console/inbox")
    assert status == 200 and "Nobody is waiting" in page and "agent@example.com" in page
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    # The API is not opened by a console cookie.
    status, _, _ = await browser.get("/api/v1/handoffs")
    assert status == 401

    await browser.post("/console/sign-out")
    status, _, _ = await browser.get("/console/inbox")
    assert status == 303


async def test_a_disabled_account_is_signed_out_at_its_next_request(console: Console) -> None:
    await console.user("leaver@example.com", "agent")
    browser = console.open()
    assert await browser.sign_in("leaver@example.com") == 303
    status, _, _ = await browser.get("/console/inbox")
    assert status == 200
    async with console.backend.app[SESSIONS].begin() as session:
        await users.set_disabled(session, console.clock, "leaver@example.com", True)
    status, _, response = await browser.get("/console/inbox")
    assert status == 303 and response.headers["Location"].startswith("/console/sign-in")
    assert await browser.sign_in("leaver@example.com") == 401  # the form again, refused


async def test_a_sign_in_never_redirects_off_the_console(console: Console) -> None:
    await console.user("agent@example.com", "agent")
    browser = console.open()
    for target in ("https://evil.example/", "//evil.example/console/", "/api/v1/audit"):
        assert await browser.sign_in("agent@example.com", next_=target) == 303
        assert browser.location == "/console/"  # which leads on to the role's first page


async def test_five_wrong_passwords_lock_the_account_for_fifteen_minutes(
    console: Console,
) -> None:
    await console.user("agent@example.com", "agent")
    browser = console.open()
    await browser.get("/console/sign-in")
    for _ in range(4):
        status, page, _ = await browser.post(
            "/console/sign-in", {"email": "agent@example.com", "password": "guess guess guess"}
        )
        assert status == 401 and "do not match an account" in page
    status, page, _ = await browser.post(
        "/console/sign-in", {"email": "agent@example.com", "password": "guess guess guess"}
    )
    assert status == 401 and "locked until 09:45 UTC" in page
    # Even the right password is refused while locked...
    assert await browser.sign_in("agent@example.com") == 401
    console.clock.advance(timedelta(minutes=15, seconds=1))
    # ...and works once the lock has passed.
    assert await browser.sign_in("agent@example.com") == 303
    # An unknown address reads exactly like a wrong password.
    await browser.get("/console/sign-in")
    status, page, _ = await browser.post(
        "/console/sign-in", {"email": "nobody@example.com", "password": PASSWORD}
    )
    assert status == 401 and "do not match an account" in page


async def test_a_change_without_the_forms_csrf_token_is_refused(console: Console) -> None:
    await console.user("agent@example.com", "agent")
    handoff = await console.handed_off(NUMBER)
    browser = console.open()
    await browser.sign_in("agent@example.com")
    claim = f"/console/handoffs/{handoff['id']}/claim"
    status, page, _ = await browser.post(claim, csrf=False)
    assert status == 403 and "CSRF" in page
    status, _, _ = await browser.post(claim, {"csrf": "forged"}, csrf=False)
    assert status == 403
    # A sign-in form from another site is refused too (login CSRF).
    other = console.open()
    status, _, _ = await other.post(
        "/console/sign-in", {"email": "agent@example.com", "password": PASSWORD}, csrf=False
    )
    assert status == 403
    got = await console.backend.api.get(f"/api/v1/handoffs/{handoff['id']}")
    assert got["claimed_by"] is None


async def test_each_role_sees_what_the_api_table_allows(console: Console) -> None:
    await console.user("analyst@example.com", "analyst")
    await console.user("marketer@example.com", "marketer")
    handoff = await console.handed_off(NUMBER)
    analyst = console.open()
    await analyst.sign_in("analyst@example.com")
    status, page, _ = await analyst.get("/console/inbox")
    assert status == 403 and "may not" in page
    status, _, _ = await analyst.post(f"/console/handoffs/{handoff['id']}/claim")
    assert status == 403
    marketer = console.open()
    await marketer.sign_in("marketer@example.com")
    status, _, _ = await marketer.get("/console/inbox")
    assert status == 200


async def test_an_agent_claims_answers_by_text_and_hands_back(console: Console) -> None:
    await console.user("sam@example.com", "agent")
    await console.user("kim@example.com", "agent")
    await console.backend.texted(NUMBER, "can I speak to someone")
    handoff = await console.handed_off(NUMBER)
    console.rasa.events[NUMBER] = [
        {"event": "user", "text": "can I speak to someone", "timestamp": 1.0,
         "input_channel": "sms", "parse_data": {"intent": {"name": "human_handoff",
                                                           "confidence": 0.98}}},
        {"event": "bot", "text": "A person will be with you shortly.", "timestamp": 1.1},
    ]  # fmt: skip
    sam, kim = console.open(), console.open()
    await sam.sign_in("sam@example.com")
    await kim.sign_in("kim@example.com")

    status, page, _ = await sam.get("/console/inbox")
    assert "Dana" in page and "+1 202-555-0143" in page
    assert "A person will be with you shortly." in page and "nobody yet" in page
    page_path = f"/console/handoffs/{handoff['id']}"
    status, page, _ = await sam.get(page_path)
    assert status == 200 and "can I speak to someone" in page and "human_handoff" in page

    status, panel, _ = await sam.post(page_path + "/claim", HX_Request="true")
    assert status == 200 and "sam@example.com" in panel
    # Kim sees it is Sam's, and cannot answer.
    await kim.get(page_path)
    status, panel, _ = await kim.post(
        page_path + "/messages", {"body": "Hi from Kim"}, HX_Request="true"
    )
    assert "sam@example.com is answering" in panel
    status, panel, _ = await sam.post(
        page_path + "/messages", {"body": "Hi Dana, Sam here."}, HX_Request="true"
    )
    assert status == 200 and "error" not in panel
    await console.backend.settle()
    assert console.backend.sent_to(NUMBER) == ["Hi Dana, Sam here."]
    status, panel, _ = await sam.post(page_path + "/close", HX_Request="true")
    assert "Handed back" in panel
    assert console.rasa.events[NUMBER][-2]["event"] == "resume"


async def test_the_inbox_hears_of_new_hand_offs_as_they_happen(console: Console) -> None:
    await console.user("sam@example.com", "agent")
    browser = console.open()
    await browser.sign_in("sam@example.com")
    async with browser.http.get(browser.url + "/console/inbox/events") as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")

        async def next_event() -> dict[str, int]:
            while True:
                line = (await asyncio.wait_for(stream.content.readline(), 10)).decode()
                if line.startswith("data: "):
                    got: dict[str, int] = json.loads(line[6:])
                    return got

        assert await next_event() == {"open": 0, "waiting": 0}
        handoff = await console.handed_off(NUMBER)
        assert await next_event() == {"open": 1, "waiting": 1}
        await browser.get("/console/inbox")
        await browser.post(f"/console/handoffs/{handoff['id']}/claim")
        assert await next_event() == {"open": 1, "waiting": 0}


async def test_a_marketer_finds_a_person_and_reads_their_consent_timeline(
    console: Console,
) -> None:
    await console.user("mia@example.com", "marketer")
    person = await console.backend.api.identify(
        "sms", NUMBER, first_name="Dana", last_name="Reyes", company="Acme"
    )
    for action, reply in (("grant", "sure, text me"), ("confirm", "YES")):
        await console.backend.api.post(
            f"/api/v1/profiles/{person['id']}/consent",
            {"channel": "sms", "purpose": "marketing", "action": action, "source": "dialogue",
             "wording": "Can we text you offers? Reply YES.", "reply": reply},
            expect=201,
        )  # fmt: skip
    mia = console.open()
    await mia.sign_in("mia@example.com")
    for query in ("dana", "REYES d", "(202) 555-0143", "acme"):
        status, page, _ = await mia.get(f"/console/people?query={query}")
        assert status == 200 and f"/console/people/{person['id']}" in page, query
    status, results, _ = await mia.get("/console/people?query=dan", HX_Request="true")
    assert "Dana" in results and "<html" not in results  # htmx gets the results only

    status, page, _ = await mia.get(f"/console/people/{person['id']}")
    assert status == 200 and "Dana Reyes" in page and "Acme" in page
    assert "sms marketing: <b>granted</b>" in page
    assert "Can we text you offers? Reply YES." in page and "They said: “YES”" in page
    assert "asked (waiting for a YES)" in page and "confirmed" in page
    assert "Privacy requests" not in page  # GDPR requests are an admin's
    status, _, _ = await mia.get(f"/console/people/{person['id']}/export")
    assert status == 403


async def test_an_admin_exports_and_erases_a_person(console: Console) -> None:
    await console.user("root@example.com", "admin")
    person = await console.backend.api.identify("sms", NUMBER, first_name="Dana")
    admin = console.open()
    await admin.sign_in("root@example.com")
    status, page, _ = await admin.get(f"/console/people/{person['id']}")
    assert "Export everything" in page and "Type ERASE to confirm" in page
    async with admin.http.get(f"{admin.url}/console/people/{person['id']}/export") as response:
        assert response.status == 200
        assert response.headers["Content-Disposition"].startswith("attachment;")
        exported = await response.json()
    assert exported["profile"]["first_name"] == "Dana"

    status, _, response = await admin.post(f"/console/people/{person['id']}/erase", {})
    assert status == 303 and "Type+ERASE" in response.headers["Location"]
    assert (await console.backend.api.get(f"/api/v1/profiles/{person['id']}"))["_status"] == 200
    status, _, response = await admin.post(
        f"/console/people/{person['id']}/erase", {"confirm": "ERASE"}
    )
    assert status == 303 and "erased" in response.headers["Location"]
    await console.backend.api.get(f"/api/v1/profiles/{person['id']}", expect=404)
    status, _, _ = await admin.get(f"/console/people/{person['id']}")
    assert status == 404
    async with console.backend.app[SESSIONS]() as session:
        actors = {
            (entry.action, entry.actor, entry.role)
            for entry in await session.scalars(select(AuditEntry))
        }
    assert {("export_profile", "root@example.com", "admin"),
            ("erase_profile", "root@example.com", "admin")} <= actors  # fmt: skip


async def test_a_marketer_pauses_and_resumes_a_sequence(console: Console) -> None:
    await console.user("mia@example.com", "marketer")
    await console.user("ann@example.com", "analyst")
    mia = console.open()
    await mia.sign_in("mia@example.com")
    status, page, _ = await mia.get("/console/sequences")
    assert status == 200 and "trial-nurture" in page and "running" in page
    status, _, response = await mia.post(
        "/console/sequences/trial-nurture/hold", {"back": "/console/sequences/trial-nurture"}
    )
    assert status == 303 and response.headers["Location"] == "/console/sequences/trial-nurture"
    listed = await console.backend.api.get("/api/v1/sequences")
    assert {s["id"]: s["on_hold"] for s in listed["items"]}["trial-nurture"] is True
    status, page, _ = await mia.get("/console/sequences/trial-nurture")
    assert "paused by mia@example.com" in page and ">Resume<" in page
    assert "Funnel per step" in page and '"funnel"' in page  # the charts' data
    await mia.post("/console/sequences/trial-nurture/resume", {"back": "https://evil.example"})
    listed = await console.backend.api.get("/api/v1/sequences")
    assert {s["id"]: s["on_hold"] for s in listed["items"]}["trial-nurture"] is False

    ann = console.open()
    await ann.sign_in("ann@example.com")
    status, page, _ = await ann.get("/console/sequences")
    assert status == 200 and ">Pause<" not in page  # analysts read, they do not pause
    status, _, _ = await ann.post("/console/sequences/trial-nurture/hold")
    assert status == 403


async def test_a_marketer_writes_a_segment_watching_its_count_and_saves_it(
    console: Console,
) -> None:
    await console.user("mia@example.com", "marketer")
    for n, size in enumerate((10, 60, 200)):
        await console.backend.api.identify("web", f"s-{n}", first_name=f"Lee{n}", team_size=size)
    mia = console.open()
    await mia.sign_in("mia@example.com")
    status, page, _ = await mia.get("/console/segments")
    assert status == 200 and "big-teams" in page and "data/segments/big-teams.yml" in page
    status, count, _ = await mia.get("/console/segments/big-teams/count")
    assert count == "2"

    await mia.get("/console/segments/new")
    rule = "rule:\n  field: attributes.team_size\n  op: gte\n  value: {}\n"
    _, preview, _ = await mia.post(
        "/console/segments/preview", {"name": "mid", "text": rule.format(50)}, HX_Request="true"
    )
    assert '<span class="segment-count">2</span> people' in preview and "Lee1" in preview
    _, preview, _ = await mia.post(
        "/console/segments/preview", {"name": "mid", "text": rule.format(100)}, HX_Request="true"
    )
    assert '<span class="segment-count">1</span> person' in preview and "Lee2" in preview
    # A mistake is named at its line, as `parley validate` names it in a file.
    _, preview, _ = await mia.post(
        "/console/segments/preview",
        {"name": "mid", "text": "rule:\n  field: attributes.team_size\n  op: bigger\n  value: 1\n"},
        HX_Request="true",
    )
    assert "line 3: rule.op: Input should be" in preview

    status, _, response = await mia.post(
        "/console/segments/save", {"name": "mid-teams", "text": rule.format(100)}
    )
    assert status == 303 and "Saved+segment+mid-teams" in response.headers["Location"]
    members = await console.backend.api.get("/api/v1/segments/mid-teams/count")
    assert members["count"] == 1
    async with mia.http.get(f"{mia.url}/console/segments/mid-teams/yaml") as download:
        assert "op: gte" in await download.text()
    # A file's segment is the file's to change.
    status, page, _ = await mia.post(
        "/console/segments/save", {"name": "big-teams", "text": rule.format(1)}
    )
    assert status == 409 and "edit the file" in page
    status, page, _ = await mia.post("/console/segments/save", {"name": "Bad Name", "text": rule})
    assert status == 422 and "line 1" in page


async def test_the_overview_and_conversations_pages_read_the_record(console: Console) -> None:
    await console.user("ann@example.com", "analyst")
    api = console.backend.api
    for conversation, channel, intent in (
        (NUMBER, "sms", "ask_price"),
        ("chat-1", "webchat", "nlu_fallback"),
    ):
        await api.post(
            "/api/v1/events",
            {"type": "intent_expressed", "occurred_at": "2026-03-01T10:00:00Z",
             "identity": {"kind": "sms" if channel == "sms" else "web", "address": conversation},
             "properties": {"intent": intent, "channel": channel, "conversation": conversation}},
        )  # fmt: skip
    ann = console.open()
    assert await ann.sign_in("ann@example.com") == 303
    assert ann.location == "/console/"
    status, _, response = await ann.get("/console/")
    assert response.headers["Location"] == "/console/overview"  # analysts answer no one
    status, page, _ = await ann.get("/console/overview?days=7")
    assert (
        status == 200 and "<b>2</b> conversations" in page and "<b>50.0%</b> not understood" in page
    )
    assert '"channels": {"sms": [' in page
    status, page, _ = await ann.get("/console/conversations?since=2026-03-01&fell_back=on")
    assert status == 200 and "/console/conversations/chat-1" in page and NUMBER not in page
    status, page, _ = await ann.get("/console/conversations?since=not-a-date")
    assert status == 400 and "must be a date" in page
