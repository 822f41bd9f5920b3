"""Settings: every one is documented in .env.example, and empty values mean the default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.core.settings import PROJECT_ROOT, Settings

EXAMPLE = PROJECT_ROOT / ".env.example"


def documented() -> set[str]:
    return set(re.findall(r"^(PARLEY_[A-Z_]+)=", EXAMPLE.read_text(), re.MULTILINE))


def test_every_backend_setting_is_in_env_example() -> None:
    names = {f"PARLEY_{name.upper()}" for name in Settings.model_fields}
    assert names - documented() == set()


def test_an_empty_value_in_env_means_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / ".env"
    env.write_text("PARLEY_RASA_TOKEN=\nPARLEY_BACKEND_PORT=\nPARLEY_RASA_PORT=6005\n")
    for name in ("PARLEY_RASA_TOKEN", "PARLEY_BACKEND_PORT", "PARLEY_RASA_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=env)
    assert settings.rasa_token is None
    assert settings.backend_port == 8000
    assert settings.rasa_port == 6005


def test_secrets_do_not_show_in_the_settings_repr() -> None:
    settings = Settings(_env_file=None, rasa_token="s3cret-value")
    assert "s3cret-value" not in repr(settings)
    assert "s3cret-value" not in str(settings.model_dump())


def test_rabbitmq_is_local_by_default_and_its_password_never_shows() -> None:
    settings = Settings(_env_file=None)
    assert settings.resolved_rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/"
    odd = Settings(_env_file=None, rabbitmq_host="mq", rabbitmq_user="parley",
                   rabbitmq_password="p@ss:w/rd")  # fmt: skip
    assert odd.resolved_rabbitmq_url == "amqp://parley:p%40ss%3Aw%2Frd@mq:5672/"
    whole = Settings(_env_file=None, rabbitmq_url="amqp://u:s3cret-value@h:5673/v")
    assert whole.resolved_rabbitmq_url == "amqp://u:s3cret-value@h:5673/v"
    for shown in (repr(odd), repr(whole), str(odd.model_dump()), str(whole.model_dump())):
        assert "p@ss" not in shown and "s3cret-value" not in shown
