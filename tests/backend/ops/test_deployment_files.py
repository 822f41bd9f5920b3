"""docker-compose.yml cannot be run here (no Docker engine), so at least everything it
points at must exist and agree with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from backend.core.settings import PROJECT_ROOT


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_dockerfile_and_build_target_exists() -> None:
    for name, service in compose()["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = PROJECT_ROOT / build["dockerfile"]
        assert dockerfile.exists(), name
        if "target" in build:
            assert re.search(rf"^FROM .* AS {build['target']}$", dockerfile.read_text(), re.M), name


def test_the_files_the_images_copy_and_run_exist() -> None:
    for dockerfile in (PROJECT_ROOT / "docker").glob("*.Dockerfile"):
        text = dockerfile.read_text()
        for source in re.findall(r"^COPY (\S+) ", text, re.M):
            assert (PROJECT_ROOT / source).exists(), (dockerfile.name, source)
        for module in re.findall(r'"-m", "([\w.]+)"', text):
            assert (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py").exists(), module
        for config in re.findall(r'"(bot/[\w.]+\.yml)"', text):
            assert (PROJECT_ROOT / config).exists(), config


def test_the_scale_endpoints_use_a_shared_lock_store_and_event_broker() -> None:
    endpoints = yaml.safe_load((PROJECT_ROOT / "bot" / "endpoints.scale.yml").read_text())
    assert endpoints["lock_store"]["type"] == "redis"
    # Parley's broker posts to the backend and hands every event on to RabbitMQ, to a
    # bounded queue (docs/privacy.md).
    broker = endpoints["event_broker"]
    assert broker["type"] == "bot.conversation_events.BackendEventBroker"
    assert broker["forward_to"]["type"] == "bot.bounded_pika.BoundedPikaEventBroker"
    assert broker["forward_to"]["max_length"] > 0 and broker["forward_to"]["message_ttl_hours"] > 0
    assert endpoints["tracker_store"]["type"] == "bot.tracker_store.ParleySQLTrackerStore"


def test_both_profiles_use_the_event_broker_that_reports_to_the_backend() -> None:
    for name in ("endpoints.yml", "endpoints.scale.yml"):
        endpoints = yaml.safe_load((PROJECT_ROOT / "bot" / name).read_text())
        module, _, cls = endpoints["event_broker"]["type"].rpartition(".")
        assert (PROJECT_ROOT / Path(*module.split("."))).with_suffix(".py").exists(), name
        assert f"class {cls}(" in (PROJECT_ROOT / "bot" / "conversation_events.py").read_text()
