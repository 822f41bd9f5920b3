"""The Rasa project on disk and the bot runtime that serves it.

Knows which files make up the training input, names a model after their fingerprint
(so `parley train` retrains only when something changed), and builds the command lines
that run Rasa and the action server in `.venv-bot`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from backend.settings import Settings

# What Rasa trains on. Other files under data/ (sequences, segments, ...) are the
# backend's and must not trigger a retrain.
TRAINING_DATA = ("data/nlu", "data/stories", "data/rules")
DOMAIN = "bot/domain"
CONFIG = "config.yml"
# Code that changes what a trained model means.
MODEL_INPUTS = (*TRAINING_DATA, DOMAIN, CONFIG, "bot/components")
# Pinned libraries whose version changes the model format (lines of requirements/bot.txt).
MODEL_LIBRARIES = re.compile(r"^(?:rasa|tensorflow|spacy)==\S+", re.MULTILINE)


class BotRuntimeMissing(RuntimeError):
    """`.venv-bot` is not installed."""


@dataclass(frozen=True)
class RasaProject:
    root: Path
    models_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> RasaProject:
        return cls(root=settings.root, models_dir=settings.models_path)

    @property
    def bot_bin(self) -> Path:
        return self.root / ".venv-bot" / "bin"

    def executable(self, name: str) -> str:
        path = self.bot_bin / name
        if not path.exists():
            raise BotRuntimeMissing(
                f"{path} is missing: the bot runtime is not installed. Run 'make install'."
            )
        return str(path)

    def fingerprint(self) -> str:
        """A hash of every file that goes into a model, by path and content."""
        digest = hashlib.sha256()
        for relative in MODEL_INPUTS:
            base = self.root / relative
            files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else [base]
            for path in files:
                if not path.exists() or "__pycache__" in path.parts:
                    continue
                digest.update(str(path.relative_to(self.root)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
        lock = self.root / "requirements" / "bot.txt"
        if lock.exists():
            digest.update(" ".join(MODEL_LIBRARIES.findall(lock.read_text())).encode())
        return digest.hexdigest()[:16]

    def model_name(self) -> str:
        return f"parley-{self.fingerprint()}"

    def model_path(self) -> Path:
        return self.models_dir / f"{self.model_name()}.tar.gz"

    def data_args(self) -> list[str]:
        return ["--data", *(str(self.root / d) for d in TRAINING_DATA)]

    def train_command(self) -> list[str]:
        return [
            self.executable("rasa"), "train",
            "--config", str(self.root / CONFIG),
            "--domain", str(self.root / DOMAIN),
            *self.data_args(),
            "--out", str(self.models_dir),
            "--fixed-model-name", self.model_name(),
        ]  # fmt: skip

    def validate_command(self) -> list[str]:
        return [
            self.executable("rasa"), "data", "validate",
            "--config", str(self.root / CONFIG),
            "--domain", str(self.root / DOMAIN),
            *self.data_args(),
            "--fail-on-warnings",
        ]  # fmt: skip

    def rasa_server_command(self, settings: Settings, model: Path) -> list[str]:
        # bot.rasa_server is `rasa run` taking its API token from PARLEY_RASA_TOKEN,
        # so the secret never shows in the process list.
        return [
            self.executable("python"), "-m", "bot.rasa_server", "run",
            "--model", str(model),
            "--endpoints", str(settings.path(settings.rasa_endpoints)),
            "--credentials", str(settings.path(settings.rasa_credentials)),
            "--interface", settings.host,
            "--port", str(settings.rasa_port),
            "--enable-api",
        ]  # fmt: skip

    def action_server_command(self) -> list[str]:
        return [self.executable("python"), "-m", "bot.action_server"]
