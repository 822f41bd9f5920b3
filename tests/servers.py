"""Local servers the tests use (PostgreSQL, Redis, RabbitMQ), for both runtimes' tests:
where PostgreSQL is, and what a test does when a server it needs is not running."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_DSN = os.environ.get(
    "PARLEY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_URL = os.environ.get("PARLEY_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")


def server_missing(message: str) -> None:
    """A local server a test needs is not running: on a developer's machine the test is
    skipped with how to run it; with CI=true it fails, since CI has every server."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{message} (CI=true: tests that need it are mandatory)")
    pytest.skip(f"{message}; start it to run this test")


def free_port() -> int:
    """A loopback port nothing listens on now (tests never use fixed ports)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
