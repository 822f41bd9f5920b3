"""Reading what marketers write under data/ (scoring rules, segments, sequences), with
every mistake reported as file:line: message, so that a typo is found without reading a
stack trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backend.core.settings import PROJECT_ROOT
from backend.messaging.guards import ContactRules
from backend.people.retention import RetentionPolicy
from backend.scoring.rules import ScoringRules
from backend.segments.rules import SegmentDefinition, error_path
from backend.sequences.checks import SequenceProblem, Vocabulary, check
from backend.sequences.definition import SequenceDefinition

Model = TypeVar("Model", bound=BaseModel)
# The bot's domain, whose intents and forms sequences may name.
DOMAIN_DIR = PROJECT_ROOT / "bot" / "domain"
Path_ = tuple[int | str, ...]


@dataclass(frozen=True)
class Mistake:
    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class DataFileInvalid(ValueError):
    def __init__(self, mistakes: list[Mistake]) -> None:
        super().__init__("\n".join(str(m) for m in mistakes))
        self.mistakes = mistakes


def _lines(node: yaml.Node, path: Path_, out: dict[Path_, int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            # A mistake in a value is reported where the value starts.
            _lines(value, (*path, key.value), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _lines(item, (*path, index), out)


def read(
    path: Path, model: type[Model], defaults: Callable[[Path], dict[str, Any]] | None = None
) -> Model:
    """Parse one YAML file into `model`, or raise DataFileInvalid naming lines."""
    return _parse(path, model, defaults)[0]


def read_text(
    text: str,
    path: Path,
    model: type[Model],
    defaults: Callable[[Path], dict[str, Any]] | None = None,
) -> Model:
    """`read` for a file's text not yet on disk (the console's editors): the same checks,
    its mistakes named at `path` and their lines."""
    return _parse_text(text, path, model, defaults)[0]


def _parse(
    path: Path, model: type[Model], defaults: Callable[[Path], dict[str, Any]] | None = None
) -> tuple[Model, yaml.Node | None, dict[Path_, int]]:
    """`read`, also giving the file's YAML nodes and the line of every value."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileInvalid([Mistake(path, 1, f"cannot read: {error}")]) from error
    return _parse_text(text, path, model, defaults)


def _parse_text(
    text: str,
    path: Path,
    model: type[Model],
    defaults: Callable[[Path], dict[str, Any]] | None = None,
) -> tuple[Model, yaml.Node | None, dict[Path_, int]]:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        line = error.problem_mark.line + 1 if error.problem_mark else 1
        raise DataFileInvalid([Mistake(path, line, f"not valid YAML: {error.problem}")]) from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise DataFileInvalid([Mistake(path, 1, "the file must hold a mapping (key: value lines)")])
    if defaults:
        data = {**defaults(path), **data}
    lines: dict[Path_, int] = {}
    if node is not None:
        _lines(node, (), lines)
    try:
        return model.model_validate(data), node, lines
    except ValidationError as error:
        raise DataFileInvalid(
            [_mistake(path, lines, item) for item in error.errors(include_url=False)]
        ) from error


def _mistake(path: Path, lines: dict[Path_, int], item: Any) -> Mistake:
    where = error_path(tuple(item["loc"]))
    for cut in range(len(where), -1, -1):
        if where[:cut] in lines:
            line = lines[where[:cut]]
            break
    else:
        line = 1
    location = ".".join(str(p) for p in where)
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        message = "unknown key: check its spelling and indentation"
    return Mistake(path, line, f"{location}: {message}" if location else message)


def load_scoring(data_dir: Path) -> ScoringRules:
    path = data_dir / "scoring.yml"
    return read(path, ScoringRules) if path.exists() else ScoringRules()


def load_segments(data_dir: Path) -> list[SegmentDefinition]:
    """Every data/segments/*.yml; a file's name is the segment's name unless it says otherwise."""
    folder = data_dir / "segments"
    segments: dict[str, SegmentDefinition] = {}
    where: dict[str, Path] = {}
    mistakes: list[Mistake] = []
    for path in sorted(folder.glob("*.yml")) if folder.is_dir() else []:
        try:
            segment = read(path, SegmentDefinition, lambda p: {"name": p.stem})
        except DataFileInvalid as invalid:
            mistakes += invalid.mistakes
            continue
        if segment.name in segments:
            mistakes.append(
                Mistake(
                    path, 1, f"segment {segment.name!r} is also defined in {where[segment.name]}"
                )
            )
            continue
        segments[segment.name] = segment
        where[segment.name] = path
    if mistakes:
        raise DataFileInvalid(mistakes)
    return list(segments.values())


def load_sequences(data_dir: Path, domain_dir: Path = DOMAIN_DIR) -> list[SequenceDefinition]:
    """Every data/sequences/*.yml; a file's name is the sequence's name unless it says
    otherwise. Segments, the bot's intents and forms, step ids and templates are checked."""
    folder = data_dir / "sequences"
    paths = sorted(folder.glob("*.yml")) if folder.is_dir() else []
    if not paths:
        return []
    vocabulary = _vocabulary(data_dir, domain_dir)
    sequences: dict[str, SequenceDefinition] = {}
    where: dict[str, Path] = {}
    mistakes: list[Mistake] = []
    for path in paths:
        try:
            sequence, node, lines = _parse(path, SequenceDefinition, lambda p: {"name": p.stem})
        except DataFileInvalid as invalid:
            mistakes += invalid.mistakes
            continue
        problems = check(sequence, vocabulary)
        mistakes += [_problem(path, node, lines, problem) for problem in problems]
        if sequence.name in sequences:
            line = lines.get(("name",), 1)
            mistakes.append(
                Mistake(
                    path,
                    line,
                    f"sequence {sequence.name!r} is also defined in {where[sequence.name]}",
                )
            )
        elif not problems:
            sequences[sequence.name] = sequence
            where[sequence.name] = path
    if mistakes:
        raise DataFileInvalid(sorted(mistakes, key=lambda m: (str(m.file), m.line)))
    return list(sequences.values())


def _problem(
    path: Path, node: yaml.Node | None, lines: dict[Path_, int], problem: SequenceProblem
) -> Mistake:
    location = ".".join(str(p) for p in problem.where)
    message = f"{location}: {problem.message}"
    line = 1
    for cut in range(len(problem.where), -1, -1):
        if problem.where[:cut] in lines:
            line = lines[problem.where[:cut]]
            break
    if problem.template_line is not None:
        found = _node_at(node, problem.where)
        if isinstance(found, yaml.ScalarNode):
            # A block (| or >) starts its text on the line after the key.
            first = found.start_mark.line + 1 + (1 if found.style in ("|", ">") else 0)
            line = first + problem.template_line - 1
    return Mistake(path, line, message)


def _node_at(node: yaml.Node | None, where: Path_) -> yaml.Node | None:
    for part in where:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            return None
    return node


def load_forms(domain_dir: Path = DOMAIN_DIR) -> frozenset[str]:
    """The forms the bot's domain declares (`forms:` in bot/domain/*.yml), as the bot's
    event broker reads them (bot/conversation_events.py): only a form completes."""
    names: set[str] = set()
    for path in sorted(domain_dir.glob("*.yml")):
        forms = _yaml_mapping(path).get("forms")
        if isinstance(forms, dict):
            names |= {str(name) for name in forms}
    return frozenset(names)


def _vocabulary(data_dir: Path, domain_dir: Path) -> Vocabulary:
    """What sequences may name: segment files, the bot's intents and forms, the business."""
    try:
        segments = frozenset(s.name for s in load_segments(data_dir))
    except DataFileInvalid:
        # Their mistakes are reported with the segments; check names against the files.
        segments = frozenset(p.stem for p in (data_dir / "segments").glob("*.yml"))
    intents: frozenset[str] | None = None
    forms: frozenset[str] | None = None
    questions: frozenset[str] | None = None
    if domain_dir.is_dir():
        found_intents, found_forms, found_questions = set(), set(), set()
        for path in sorted(domain_dir.glob("*.yml")):
            domain = _yaml_mapping(path)
            for intent in domain.get("intents") or []:
                found_intents |= set(intent) if isinstance(intent, dict) else {str(intent)}
            found_forms |= set(domain.get("forms") or {})
            follow_up = (domain.get("slots") or {}).get("follow_up") or {}
            found_questions |= {str(v) for v in follow_up.get("values") or []}
        # Training adds `faq` (and its answers faq/<id>) from the catalog.
        catalog = _yaml_mapping(data_dir / "catalog.yml")
        faqs = [f for f in catalog.get("faq") or [] if isinstance(f, dict) and "id" in f]
        found_intents |= {"faq", *(f"faq/{f['id']}" for f in faqs)}
        intents, forms = frozenset(found_intents), frozenset(found_forms)
        questions = frozenset(found_questions)
    business = _yaml_mapping(data_dir / "business.yml")
    return Vocabulary(
        segments=segments, intents=intents, forms=forms, business=business, questions=questions
    )


def _yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, or {} when it is missing or broken (its own
    checks report that)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


class BusinessTexts(BaseModel):
    """data/business.yml as the backend reads it: the fields it checks, and the rest as
    it is (what templates see of it is chosen by backend.sequences.definition.business_context;
    the bot runtime checks the rest)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=60)
    sms_help: str = Field(min_length=1, max_length=320)
    # The postal address every marketing e-mail shows (CAN-SPAM).
    address: str | None = Field(None, min_length=1, max_length=300)
    # The business's own time zone: a person's, when neither their profile nor their
    # number says.
    timezone: str = "UTC"
    follow_ups: ContactRules = Field(default_factory=ContactRules)
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)

    @property
    def contact_email(self) -> str | None:
        """`contact: email:`, where e-mails come from unless PARLEY_EMAIL_FROM says."""
        contact = (self.model_extra or {}).get("contact")
        found = contact.get("email") if isinstance(contact, dict) else None
        return found if isinstance(found, str) and "@" in found else None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone such as Europe/Paris") from None
        return value

    @field_validator("sms_help")
    @classmethod
    def _says_how_to_stop(cls, value: str) -> str:
        # What carriers require of a HELP answer.
        if "STOP" not in value or "rates may apply" not in value.lower():
            raise ValueError("must say how to opt out (STOP) and that msg & data rates may apply")
        return " ".join(value.split())


def load_business_texts(data_dir: Path) -> BusinessTexts:
    return read(data_dir / "business.yml", BusinessTexts)


def validate(data_dir: Path) -> list[Mistake]:
    """Every mistake in the backend's data files (empty when all is well)."""
    mistakes: list[Mistake] = []
    for load in (load_scoring, load_segments, load_business_texts, load_sequences):
        try:
            load(data_dir)
        except DataFileInvalid as invalid:
            mistakes += invalid.mistakes
    return mistakes
