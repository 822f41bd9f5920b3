"""Schemathesis against the served OpenAPI document: whatever it sends, the backend
answers without a 5xx and with a response its own document allows."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.settings import PROJECT_ROOT

ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Fixed, so that a run is repeatable; change it to explore further.
SEED = "20261125"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    var = tmp_path_factory.mktemp("contract")
    port = free_port()
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        "PARLEY_BACKEND_PORT": str(port),
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{var / 'parley.db'}",
        "PARLEY_LOG_LEVEL": "warning",
        # Texts go to the local Twilio emulator, started beside the backend.
        "PARLEY_TWILIO_AUTH_TOKEN": "contract-test-token",
        "PARLEY_TWILIO_EMULATOR_PORT": str(free_port()),
        "PARLEY_SMS_SENDS_PER_SECOND": "1000",
    }
    env.pop("PARLEY_TWILIO_API_URL", None)
    parley = [sys.executable, "-m", "backend"]
    subprocess.run([*parley, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*parley, "token", "create", "--role", "admin"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    twilio = subprocess.Popen([*parley, "twilio-emulator"], env=env, cwd=PROJECT_ROOT)
    process = subprocess.Popen([*parley, "backend"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url, token
    finally:
        for running in (process, twilio):
            running.terminate()
            running.wait(timeout=15)


def schemathesis(url: str, token: str, *options: str) -> None:
    result = subprocess.run(
        [
            str(ST), "--config-file", str(CONFIG), "run", f"{url}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--workers", "2", "--seed", SEED, *options,
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_generated_requests_get_documented_answers(served: tuple[str, str]) -> None:
    schemathesis(*served, "--phases", "examples,fuzzing,stateful", "--max-examples", "50")


def test_boundary_requests_get_documented_answers(served: tuple[str, str]) -> None:
    schemathesis(*served, "--phases", "coverage", "--max-time", "60")
