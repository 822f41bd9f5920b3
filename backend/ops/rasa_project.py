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

import yaml

from backend.core.settings import Settings

# What a model is made from. Other files under data/ (segments, scoring, sequences) are
# the backend's and must not trigger a retrain.
TRAINING_DATA = ("nlu", "stories", "rules")
CONFIG = "config.yml"
MODEL_INPUTS = (
    *(f"data/{folder}" for folder in TRAINING_DATA),
    "data/business.yml",
    "data/catalog.yml",
    "bot/domain",
    CONFIG,
    # Code that generates training input. (The pipeline's own components change only
    # how a served message is read: bot/clear_requests.py, bot/product_questions.py, and
    # bot/faq_selector.py, whose training is Rasa's ResponseSelector's. Rasa loads them
    # from their code when it loads the model, so a change to them needs no retraining.)
    "bot/training_build.py",
    "bot/business.py",
)
# Pinned libraries whose version changes the model format (lines of requirements/bot.txt).
MODEL_LIBRARIES = re.compile(r"^(?:rasa|tensorflow|spacy)==\S+", re.MULTILINE)


# Warnings `rasa data validate` gives for correct data. Rasa 3.6 adds each retrieval
# intent (faq) to the domain a second time, from the NLU data, and warns about the
# duplicate it made itself; without `faq` in the domain it warns that rules use an intent
# the domain lacks instead. Every other warning fails `parley validate`.
KNOWN_RASA_WARNINGS = (
    re.compile(r"duplicated intents have been found across multiple domain files: faq$"),
)
WARNING = re.compile(r"UserWarning: (.*)")
UNUSED_UTTERANCE = re.compile(r"^The utterance '(?P<name>[^']+)' is not used in any story or rule")


def unexpected_warnings(output: str, form_questions: frozenset[str] = frozenset()) -> list[str]:
    """The warnings in `rasa data validate` output that are not known to be harmless.

    The validator does not know that a form asks for slot X with `utter_ask_X` itself;
    writing that response into a rule would make the bot ask twice. So "not used" is
    harmless for exactly the questions forms ask (`form_questions`).
    """
    found = [m.group(1).strip() for m in WARNING.finditer(output)]
    return [
        w
        for w in found
        if not any(k.search(w) for k in KNOWN_RASA_WARNINGS)
        and not ((m := UNUSED_UTTERANCE.match(w)) and m.group("name") in form_questions)
    ]


def form_questions(domain_dir: Path) -> frozenset[str]:
    """The responses Rasa's forms utter to ask for their slots: `utter_ask_<form>_<slot>`
    and `utter_ask_<slot>` for each required slot of each form in the domain."""
    names: set[str] = set()
    for path in sorted(domain_dir.glob("*.yml")):
        forms = (yaml.safe_load(path.read_text()) or {}).get("forms") or {}
        for form, spec in forms.items():
            for slot in (spec or {}).get("required_slots") or []:
                names |= {f"utter_ask_{slot}", f"utter_ask_{form}_{slot}"}
    return frozenset(names)


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

    def build_dir(self) -> Path:
        """Where the generated training input for the current fingerprint goes."""
        return self.models_dir / "build" / self.model_name()

    def build_command(self) -> list[str]:
        return [self.executable("python"), "-m", "bot.training_build", str(self.build_dir())]

    def build_env(self) -> dict[str, str]:
        """What config.yml's ${...} need: the spaCy pipeline the build made."""
        return {"PARLEY_SPACY_MODEL": str(self.build_dir() / "spacy")}

    def _input_args(self) -> list[str]:
        build = self.build_dir()
        return [
            "--config", str(self.root / CONFIG),
            "--domain", str(build / "domain"),
            "--data", *(str(build / "data" / folder) for folder in TRAINING_DATA),
        ]  # fmt: skip

    def train_command(self) -> list[str]:
        return [
            self.executable("rasa"), "train", *self._input_args(),
            "--out", str(self.models_dir),
            "--fixed-model-name", self.model_name(),
        ]  # fmt: skip

    def validate_command(self) -> list[str]:
        return [
            self.executable("rasa"),
            "data",
            "validate",
            *self._input_args(),
            "--fail-on-warnings",
        ]

    def test_stories_command(self, model: Path, out: Path) -> list[str]:
        """Rasa's dialogue test: every test story under tests/stories, action by action."""
        return [
            self.executable("rasa"), "test", "core",
            "--model", str(model),
            "--stories", str(self.root / "tests" / "stories"),
            "--out", str(out),
            "--fail-on-prediction-errors",
        ]  # fmt: skip

    def serving_test_command(self, model: Path) -> list[str]:
        """tests/model: the model as Parley serves it predicts what Rasa's own code does."""
        return [
            self.executable("python"), "-m", "pytest", "-p", "no:cacheprovider",
            str(self.root / "tests" / "model"), "--model", str(model),
        ]  # fmt: skip

    def nlu_evaluation_command(self, model: Path, report: Path) -> list[str]:
        """The held-out NLU test set (tests/nlu) scored against its minimums."""
        return [
            self.executable("python"), "-m", "bot.nlu_evaluation",
            "--model", str(model),
            "--data", str(self.root / "tests" / "nlu"),
            "--report", str(report),
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
