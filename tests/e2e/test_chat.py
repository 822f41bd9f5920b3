"""End to end: `parley run` starts backend, action server and Rasa on free loopback
ports; a person chats through Rasa's REST channel; the backend holds what they said.

Needs the trained model (`make train` runs before this in `make test`; without it,
`parley run` trains one first, which takes a few minutes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
PARLEY = ROOT / ".venv" / "bin" / "parley"
STARTUP_SECONDS = 900  # includes training when no model exists yet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Parley:
    process: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str]
    rasa: str
    backend: str
    actions: str
    rasa_token: str
    admin_token: str

    def say(self, sender: str, message: str) -> list[str]:
        response = requests.post(
            f"{self.rasa}/webhooks/rest/webhook",
            json={"sender": sender, "message": message},
            timeout=60,
        )
        response.raise_for_status()
        return [m["text"] for m in response.json() if "text" in m]

    def slots(self, sender: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.rasa}/conversations/{sender}/tracker",
            params={"token": self.rasa_token},
            timeout=10,
        )
        response.raise_for_status()
        slots: dict[str, Any] = response.json()["slots"]
        return slots

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return requests.request(
            method, f"{self.backend}{path}", headers=headers, timeout=10, **kwargs
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def parley(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parley]:
    var = tmp_path_factory.mktemp("var")
    ports = {name: free_port() for name in ("BACKEND", "RASA", "ACTION_SERVER")}
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        **{f"PARLEY_{name}_PORT": str(port) for name, port in ports.items()},
        "PARLEY_RASA_TOKEN": "e2e-rasa-token",
    }
    for leaked in ("PARLEY_DATABASE_URL", "PARLEY_BACKEND_TOKEN", "PARLEY_RASA_TRACKER_STORE_URL"):
        env.pop(leaked, None)
    admin = subprocess.run(
        [str(PARLEY), "token", "create", "--role", "admin", "--name", "e2e"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = var / "parley-run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(PARLEY), "run"], env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT
        )
    running = Parley(
        process=process,
        log=log,
        env=env,
        rasa=f"http://127.0.0.1:{ports['RASA']}",
        backend=f"http://127.0.0.1:{ports['BACKEND']}",
        actions=f"http://127.0.0.1:{ports['ACTION_SERVER']}",
        rasa_token="e2e-rasa-token",
        admin_token=admin,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while "[parley] Parley is up." not in running.output():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"parley run did not come up:\n{running.output()[-5000:]}")
        time.sleep(1)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        sys.stdout.write(running.output()[-3000:])


def test_a_new_visitor_is_introduced_to_the_bot_and_their_name_reaches_the_backend(
    parley: Parley,
) -> None:
    [greeting] = parley.say("e2e-ada", "hi")
    assert "bot" in greeting
    assert "What's your name?" in greeting

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

    assert parley.say("e2e-grace", "hello") == ["Welcome back, Grace! How can I help you today?"]


def test_a_bot_question_gets_an_honest_answer(parley: Parley) -> None:
    [answer] = parley.say("e2e-curious", "are you a bot?")
    assert answer.startswith("I'm a bot")


def test_the_internal_apis_refuse_callers_without_a_token(parley: Parley) -> None:
    assert requests.get(f"{parley.rasa}/status", timeout=10).status_code == 401
    assert requests.post(f"{parley.actions}/webhook", json={}, timeout=10).status_code == 401
    assert requests.get(f"{parley.backend}/api/v1/profiles/x", timeout=10).status_code == 401


def test_no_secret_or_token_reaches_the_output(parley: Parley) -> None:
    output = parley.output()
    assert parley.admin_token not in output
    assert parley.rasa_token not in output
    assert "pk_" not in output


def test_ctrl_c_stops_all_three_processes(parley: Parley) -> None:
    parley.process.send_signal(signal.SIGINT)
    assert parley.process.wait(timeout=60) == 0
    output = parley.output()
    for name in ("rasa", "actions", "backend"):
        assert f"[parley] stopping {name}" in output
    assert output.rstrip().endswith("[parley] stopped")
    for url in (parley.rasa, parley.backend, parley.actions):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
