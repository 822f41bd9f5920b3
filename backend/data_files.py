"""Reading what marketers write under data/ (scoring rules, segments), with every mistake
reported as file:line: message, so that a typo is found without reading a stack trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from backend.scoring import ScoringRules
from backend.segments import SegmentDefinition, error_path

Model = TypeVar("Model", bound=BaseModel)
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
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as error:
        raise DataFileInvalid([Mistake(path, 1, f"cannot read: {error}")]) from error
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
        return model.model_validate(data)
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


class BusinessTexts(BaseModel):
    """What the backend reads of data/business.yml (the bot runtime reads the rest)."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=60)
    sms_help: str = Field(min_length=1, max_length=320)

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
    for load in (load_scoring, load_segments, load_business_texts):
        try:
            load(data_dir)
        except DataFileInvalid as invalid:
            mistakes += invalid.mistakes
    return mistakes
