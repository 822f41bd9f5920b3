"""Fixtures for the bot runtime's tests (Python 3.10, Rasa 3.6).

The backend these tests talk to is the real one: started from the backend runtime
(`.venv/bin/parley backend`) on a free loopback port with its own SQLite database.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rasa.core.channels.channel import InputChannel, register
from rasa_sdk import Tracker
from sanic import Sanic

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PARLEY = ROOT / ".venv" / "bin" / "parley"


@asynccontextmanager
async def serving(
    app: Sanic, channels: list[InputChannel], port: int | None = None
) -> AsyncIterator[str]:
    """The channels registered on `app` as Rasa registers them, served by a real Sanic
    server on loopback (on `port`, else a free one); its base URL. (Call with Sanic's
    test mode on.)"""
    register(channels, app, "/webhooks/")
    port = port or free_port()
    # Any: Sanic's AsyncioServer is only partly typed.
    server: Any = await app.create_server(
        "127.0.0.1", port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.before_stop()
        await server.close()
        await server.after_stop()


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout} s")


@dataclass
class RunningBackend:
    url: str
    token: str
    env: dict[str, str]


@contextmanager
def running_backend(var: Path, name: str, **settings: str) -> Iterator[RunningBackend]:
    """The real backend (`parley backend`) on a free loopback port, with its own SQLite
    database under `var`, a service token, and these `PARLEY_*` settings."""
    if not PARLEY.exists():
        pytest.fail(f"{PARLEY} is missing: run 'make install' (the backend runtime) first")
    port = free_port()
    var.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        "PARLEY_BACKEND_PORT": str(port),
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{var / 'parley.db'}",
        **settings,
    }
    token = subprocess.run(
        [str(PARLEY), "token", "create", "--role", "service", "--name", name],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    process = subprocess.Popen([str(PARLEY), "backend"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(f"{url}/health", process)
        yield RunningBackend(url=url, token=token, env=env)
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    with running_backend(
        tmp_path_factory.mktemp("backend-var"),
        "bot tests",
        # What the web chat channel's tests verify the backend's session tokens with.
        PARLEY_WEBCHAT_SECRET="bot-tests-webchat-secret-of-32-bytes-or-more",
    ) as running:
        yield running


def make_tracker(
    sender_id: str,
    text: str = "",
    intent: str = "greet",
    entities: list[dict[str, Any]] | None = None,
    channel: str = "rest",
    slots: dict[str, Any] | None = None,
) -> Tracker:
    """A tracker whose latest message is `text`, as Rasa would send it to an action."""
    latest = {
        "text": text,
        "intent": {"name": intent, "confidence": 0.99},
        "entities": entities or [],
    }
    events = [
        {"event": "action", "name": "action_listen"},
        {"event": "user", "text": text, "parse_data": latest, "input_channel": channel},
    ]
    return Tracker(
        sender_id=sender_id,
        slots=slots or {},
        latest_message=latest,
        events=events,
        paused=False,
        followup_action=None,
        active_loop={},
        latest_action_name="action_listen",
    )
