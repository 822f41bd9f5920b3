"""The bot runtime's settings are documented too, and empty means unset."""

from __future__ import annotations

import re

from bot.settings import PROJECT_ROOT, BotSettings


def test_every_bot_setting_is_in_env_example() -> None:
    documented = set(
        re.findall(r"^(PARLEY_[A-Z_]+)=", (PROJECT_ROOT / ".env.example").read_text(), re.M)
    )
    names = {f"PARLEY_{name.upper()}" for name in BotSettings.__fields__}
    assert names - documented == set()


def test_an_empty_token_means_no_token() -> None:
    assert BotSettings(_env_file=None, backend_token="").backend_token is None
