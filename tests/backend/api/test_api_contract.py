"""Schemathesis against the served OpenAPI document: whatever it sends, the backend
answers without a 5xx and with a response its own document allows, hostile JSON bodies
(deeply nested, huge numbers, NaN, lone surrogates: tests/hostile_json.py)
included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.core.settings import PROJECT_ROOT
from tests.hostile_json import HOSTILE_VALUES
from tests.servers import free_port

ST = Path(sys.executable).parent / "st"
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Fixed, so that a run is repeatable; change it to explore further.
SEED = "20261125"


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
        # E-mails to the local mail sink, started beside the backend too.
        "PARLEY_MAIL_SINK_SMTP_PORT": str(free_port()),
        "PARLEY_MAIL_SINK_PORT": str(free_port()),
        "PARLEY_SMS_SENDS_PER_SECOND": "1000",
    }
    env.pop("PARLEY_TWILIO_API_URL", None)
    env.pop("PARLEY_SMTP_HOST", None)
    parley = [sys.executable, "-m", "backend"]
    subprocess.run([*parley, "db", "upgrade"], env=env, check=True, capture_output=True)
    token = subprocess.run(
        [*parley, "token", "create", "--role", "admin"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    twilio = subprocess.Popen([*parley, "twilio-emulator"], env=env, cwd=PROJECT_ROOT)
    mail = subprocess.Popen([*parley, "mail-sink"], env=env, cwd=PROJECT_ROOT)
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
        for running in (process, twilio, mail):
            running.terminate()
            running.wait(timeout=15)


def schemathesis(url: str, token: str, *options: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        [
            str(ST), "--config-file", str(CONFIG), "run", f"{url}/api/v1/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--workers", "2", "--seed", SEED, *options,
        ],
        capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_generated_requests_get_documented_answers(served: tuple[str, str]) -> None:
    schemathesis(*served, "--phases", "examples,fuzzing,stateful", "--max-examples", "50")


def test_boundary_requests_get_documented_answers(served: tuple[str, str]) -> None:
    schemathesis(*served, "--phases", "coverage", "--max-time", "60")


def test_hostile_json_bodies_get_no_5xx_from_any_operation(
    served: tuple[str, str], tmp_path: Path
) -> None:
    """Every operation with a JSON body gets every hostile body (in place of the one
    schemathesis generated, by tests/backend/api/hostile_json_hooks.py) and answers each
    without a 5xx, with a response its document allows."""
    url, _ = served
    sent = tmp_path / "sent.tsv"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.backend.api.hostile_json_hooks",
        "PARLEY_TEST_HOSTILE_SENT": str(sent),
    }
    # Calls per operation at most; below, every operation must have had every body.
    examples = str(2 * len(HOSTILE_VALUES))
    schemathesis(*served, "--phases", "fuzzing", "--max-examples", examples, env=env)
    with urllib.request.urlopen(f"{url}/api/v1/openapi.json", timeout=10) as answer:
        document = json.load(answer)
    with_json_bodies = {
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    got = {tuple(line.split("\t")) for line in sent.read_text().splitlines()}
    missing = {(o, name) for o in with_json_bodies for name in HOSTILE_VALUES} - got
    assert not missing, sorted(missing)
