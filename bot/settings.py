"""Settings of the bot runtime (Rasa server, action server, channels).

Read once from `PARLEY_*` variables and `.env`, like the backend's; this runtime is
Python 3.10 with pydantic 1 (Rasa's pin), so it has its own small settings class.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseSettings, Field, SecretStr, validator

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BotSettings(BaseSettings):
    host: str = "127.0.0.1"
    rasa_port: int = Field(5005, ge=1, le=65535)
    action_server_port: int = Field(5055, ge=1, le=65535)
    # Rasa's HTTP API token (`--enable-api --auth-token`).
    rasa_token: SecretStr | None = None
    # What Rasa presents to the action server, and the action server demands.
    action_server_token: SecretStr | None = None
    backend_url: str = "http://127.0.0.1:8000"
    # An API token with role `service`, for the action server's calls to the backend.
    backend_token: SecretStr | None = None
    # Seconds an action waits for the backend before answering without it.
    backend_timeout: float = Field(5.0, gt=0)
    # Conversations whose current session Rasa's tracker store keeps in memory, so
    # that a turn reads only a mark from the database (bot/tracker_store.py); 0: none.
    rasa_held_conversations: int = Field(1000, ge=0)

    # Twilio (SMS and calls): webhooks are verified with the account's auth token.
    twilio_auth_token: SecretStr | None = None
    # The base URL Twilio, Amazon and browsers use to reach Rasa's channels, when it
    # differs from what Rasa sees (behind a proxy): webhook signatures cover it.
    public_url: str | None = None
    # Web chat: the key the backend signs visitors' session tokens with (`parley run`
    # passes it); without it the web chat channel refuses every socket.
    webchat_secret: SecretStr | None = None
    # Where web chat replicas share sockets and pushes, when credentials name none
    # (`parley run --profile scale` sets it; docker uses credentials.scale.yml's).
    webchat_redis_url: str | None = None

    # Alexa: when set, requests for any other skill are refused.
    alexa_skill_id: str | None = None
    # The PEM bundle Amazon's certificate chain must lead to (default: certifi's public
    # roots); relative paths are from the project root. Tests point it at their own.
    alexa_trust_root: Path | None = None

    @validator(
        "rasa_token",
        "action_server_token",
        "backend_token",
        "twilio_auth_token",
        "public_url",
        "webchat_secret",
        "alexa_skill_id",
        "alexa_trust_root",
        pre=True,
    )
    def empty_means_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def webhook_base_url(self) -> str:
        """The base of the URLs Twilio and Amazon call, which their signatures cover:
        the public URL, else Rasa's configured address (never a request's Host header).
        Bound to every interface, Rasa is reached on loopback unless a public URL says
        otherwise."""
        if self.public_url:
            return self.public_url.rstrip("/")
        wildcard = self.host in ("0.0.0.0", "::", "")  # noqa: S104 (recognised, not bound)
        host = "127.0.0.1" if wildcard else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.rasa_port}"

    class Config:
        env_prefix = "PARLEY_"
        env_file = str(PROJECT_ROOT / ".env")
        extra = "ignore"


@lru_cache(maxsize=1)
def settings() -> BotSettings:
    return BotSettings()
