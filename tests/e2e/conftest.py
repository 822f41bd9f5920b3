"""What every end-to-end test shares: one `make run` for the whole session.

`make run` (the README's command, `parley run` once everything is installed) starts the
local Twilio, backend, action server and Rasa on free loopback ports. It needs the
trained model (`make train` runs before the e2e tests in `make test`; without it,
`parley run` trains one first, which takes a few minutes). Tests marked
`stops_parley` run last, since they end the shared run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.servers import free_port


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "stops_parley: ends the shared parley run; runs last")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("stops_parley") is not None)


ROOT = Path(__file__).resolve().parents[2]
PARLEY = ROOT / ".venv" / "bin" / "parley"
MAKE = shutil.which("make") or "make"
STARTUP_SECONDS = 900  # includes training when no model exists yet


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
    twilio: str  # the local Twilio emulator `parley run` started
    mail: str  # the local mail sink's page and API

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

    def text(self, sender: str, body: str) -> dict[str, Any]:
        """A person texts the business through the local Twilio (a signed webhook)."""
        response = requests.post(
            f"{self.twilio}/emulator/sms",
            json={"from": sender, "to": "+15005550006", "body": body},
            timeout=30,
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    def texts_to(self, number: str) -> list[str]:
        """What the business has texted `number` so far, oldest first."""
        response = requests.get(f"{self.twilio}/emulator/messages", timeout=10)
        response.raise_for_status()
        return [m["body"] for m in response.json() if m["to"] == number]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """What Ctrl-C in the `make run` terminal does: SIGINT to make and its children."""
        os.killpg(self.process.pid, signal.SIGINT)


def wait_until_up(process: subprocess.Popen[bytes], output: Callable[[], str], what: str) -> None:
    """Until `parley run` says it is up; the test fails (and the run is killed) if it
    exits or takes longer than STARTUP_SECONDS."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while "[parley] Parley is up." not in output():
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{what} did not come up:\n{output()[-5000:]}")
        time.sleep(1)


@pytest.fixture(scope="session")
def parley(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parley]:
    var = tmp_path_factory.mktemp("var")
    ports = {
        name: free_port()
        for name in (
            "BACKEND",
            "RASA",
            "ACTION_SERVER",
            "TWILIO_EMULATOR",
            "MAIL_SINK_SMTP",
            "MAIL_SINK",
        )
    }
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        **{f"PARLEY_{name}_PORT": str(port) for name, port in ports.items()},
        "PARLEY_RASA_TOKEN": "e2e-rasa-token",
    }
    for leaked in (
        "PARLEY_DATABASE_URL",
        "PARLEY_BACKEND_TOKEN",
        "PARLEY_RASA_TRACKER_STORE_URL",
        "PARLEY_TWILIO_API_URL",
        "PARLEY_SMTP_HOST",
        "PARLEY_TWILIO_AUTH_TOKEN",
        "PARLEY_PUBLIC_URL",
    ):
        env.pop(leaked, None)
    admin = subprocess.run(
        [str(PARLEY), "token", "create", "--role", "admin", "--name", "e2e"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    log = var / "parley-run.log"
    with log.open("wb") as sink:
        # `make run`, as the README says; its own process group, so that Ctrl-C can be
        # played as a terminal sends it (to make and to everything it started).
        process = subprocess.Popen(
            [MAKE, "--no-print-directory", "run"], env=env, stdout=sink,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    running = Parley(
        process=process,
        log=log,
        env=env,
        rasa=f"http://127.0.0.1:{ports['RASA']}",
        backend=f"http://127.0.0.1:{ports['BACKEND']}",
        actions=f"http://127.0.0.1:{ports['ACTION_SERVER']}",
        rasa_token="e2e-rasa-token",
        admin_token=admin,
        twilio=f"http://127.0.0.1:{ports['TWILIO_EMULATOR']}",
        mail=f"http://127.0.0.1:{ports['MAIL_SINK']}",
    )
    wait_until_up(process, running.output, "make run")
    try:
        yield running
    finally:
        if process.poll() is None:
            running.ctrl_c()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        sys.stdout.write(running.output()[-3000:])
