"""End to end: a person who chatted on the web and by text is exported and erased, and
afterwards no API and no store, the backend's database or Rasa's tracker store read
directly, holds anything of them."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import PARLEY, Parley

NUMBER = "+14155550177"
VISITOR = "privacy-visitor-7f3a"  # a web conversation (Rasa's REST channel)
NAME = "Philippa"


def rows(database: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    connection = sqlite3.connect(database)
    try:
        return list(connection.execute(query, args))
    finally:
        connection.close()


def test_a_person_who_chatted_by_web_and_by_text_is_exported_and_then_erased_everywhere(
    parley: Parley,
) -> None:
    var = Path(parley.env["PARLEY_VAR_DIR"])
    tracker, backend = var / "rasa-tracker.db", var / "parley.db"
    texted = subprocess.run(
        [str(PARLEY), "sms", NUMBER, f"my name is {NAME}"], env=parley.env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert texted.returncode == 0, texted.stderr
    assert parley.say(VISITOR, f"hi, I'm {NAME}")
    person = parley.api("POST", "/api/v1/identify", json={"channel": "sms", "address": NUMBER})
    profile = person.json()["profile"]["id"]
    linked = parley.api(
        "POST", f"/api/v1/profiles/{profile}/identities",
        json={"kind": "web", "address": VISITOR},
    )  # fmt: skip
    assert linked.status_code == 200, linked.text
    profile = linked.json()["profile"]["id"]
    time.sleep(2)  # the bot's conversation events reach the backend in the background

    export = parley.api("GET", f"/api/v1/profiles/{profile}/export")
    assert export.status_code == 200, export.text
    document = export.json()
    said = {
        conversation: [e.get("text") for e in events if e.get("event") == "user"]
        for conversation, events in document["conversations"].items()
    }
    assert said[NUMBER] == [f"my name is {NAME}"]
    assert said[VISITOR] == [f"hi, I'm {NAME}"]
    assert f"my name is {NAME}" in [m["body"] for m in document["messages"]]
    assert rows(tracker, "SELECT COUNT(*) FROM events WHERE sender_id IN (?, ?)", NUMBER, VISITOR)[
        0
    ][0]

    erased = parley.api("DELETE", f"/api/v1/profiles/{profile}")
    assert erased.status_code == 204, erased.text

    # Rasa's tracker store, read directly: nothing of either conversation, nor the name.
    assert rows(
        tracker, "SELECT COUNT(*) FROM events WHERE sender_id IN (?, ?) OR data LIKE ?",
        NUMBER, VISITOR, f"%{NAME}%",
    ) == [(0,)]  # fmt: skip
    # The backend's database, read directly.
    like = f"%{NAME}%"
    for query, args in (
        ("SELECT COUNT(*) FROM messages WHERE to_address IN (?, ?) OR from_address IN (?, ?) "
         "OR body LIKE ?", (NUMBER, VISITOR, NUMBER, VISITOR, like)),
        ("SELECT COUNT(*) FROM identities WHERE address IN (?, ?)", (NUMBER, VISITOR)),
        ("SELECT COUNT(*) FROM profiles WHERE first_name LIKE ? OR phone = ?", (like, NUMBER)),
    ):  # fmt: skip
        assert rows(backend, query, *args) == [(0,)], query
    # And through the APIs.
    assert parley.api("GET", f"/api/v1/profiles/{profile}").status_code == 404
    history = parley.api("GET", f"/api/v1/profiles/{profile}/messages")
    assert history.status_code == 404
