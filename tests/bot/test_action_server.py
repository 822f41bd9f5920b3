"""The action server runs actions only for a caller that presents its token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.bot.conftest import ROOT, RunningBackend, wait_until_up
from tests.servers import free_port

TOKEN = "action-server-test-token"


@pytest.fixture
def action_server(backend: RunningBackend) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_ACTION_SERVER_PORT": str(port),
        "PARLEY_ACTION_SERVER_TOKEN": TOKEN,
        "PARLEY_BACKEND_URL": backend.url,
        "PARLEY_BACKEND_TOKEN": backend.token,
    }
    process = subprocess.Popen([sys.executable, "-m", "bot.action_server"], env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def call(url: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
    payload = {
        "next_action": "action_greet",
        "sender_id": "action-server-test",
        "version": "3.6.21",
        "domain": {},
        "tracker": {
            "sender_id": "action-server-test",
            "slots": {},
            "latest_message": {"text": "hi", "intent": {"name": "greet"}, "entities": []},
            "events": [],
            "paused": False,
            "followup_action": None,
            "active_loop": {},
            "latest_action_name": "action_listen",
        },
    }
    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    request = urllib.request.Request(
        f"{url}/webhook", data=json.dumps(payload).encode(), headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer "])
def test_calls_without_the_token_are_refused(action_server: str, authorization: str | None) -> None:
    status, body = call(action_server, authorization)
    assert status == 401
    assert body == {"error": "unauthorized"}


def test_a_call_with_the_token_runs_the_action_against_the_backend(action_server: str) -> None:
    status, body = call(action_server, f"Bearer {TOKEN}")
    assert status == 200
    slots = {e["name"]: e["value"] for e in body["events"] if e["event"] == "slot"}
    assert slots["greeting"] == "new"
    assert slots["profile_id"]
