"""Reading the build's files as their tools would, enough for tests to check the images
without a Docker engine: a Dockerfile's stages and what each image holds, .dockerignore,
and the commands CI runs (the Makefile's recipes that `.ci/run` reaches)."""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# --------------------------------------------------------------------------- Dockerfile

KEYWORDS = {"FROM", "WORKDIR", "COPY", "RUN", "ENV", "EXPOSE", "CMD"}


@dataclass(frozen=True)
class Instruction:
    keyword: str
    flags: dict[str, str]
    arguments: str

    def exec_form(self) -> list[str]:
        """CMD's JSON array (the only form these images use: no shell in between)."""
        parsed = json.loads(self.arguments)
        assert isinstance(parsed, list), self.arguments
        return [str(item) for item in parsed]


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[Instruction] = field(default_factory=list)


def logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "a Dockerfile ends in a continuation line"
    return lines


def _instruction(line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    keyword = keyword.upper()
    assert keyword in KEYWORDS, f"instruction the tests do not know: {keyword}"
    flags: dict[str, str] = {}
    rest = rest.strip()
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    return Instruction(keyword, flags, re.sub(r"\s+", " ", rest))


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        instruction = _instruction(line)
        if instruction.keyword == "FROM":
            found = re.fullmatch(r"(\S+)(?: AS (\S+))?", instruction.arguments, re.I)
            assert found, line
            stages.append(Stage(found.group(2), found.group(1)))
        else:
            assert stages, "an instruction before FROM"
            stages[-1].instructions.append(instruction)
    return stages


@dataclass(frozen=True)
class Held:
    """A path an image holds, and the build-context path it was copied from (if any)."""

    path: PurePosixPath
    context: str | None


@dataclass
class Image:
    """One stage built: where it works, what it holds and its environment. `runs` are its
    RUN commands, each with what the image held when it ran."""

    stage: Stage
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    held: list[Held] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    runs: list[tuple[str, list[Held]]] = field(default_factory=list)
    cmd: list[str] | None = None

    def at(self, path: str) -> PurePosixPath:
        return self.workdir / path

    def holds(self, path: str | PurePosixPath, ignored: DockerIgnore) -> bool:
        return holds(self.held, self.at(str(path)), ignored)


def base_image(stages: Sequence[Stage], stage: Stage) -> str:
    """The image a stage starts from, through the stages it builds on."""
    by_name = {s.name: s for s in stages}
    while stage.base in by_name:
        stage = by_name[stage.base]
    return stage.base


def holds(held: Sequence[Held], path: PurePosixPath, ignored: DockerIgnore) -> bool:
    """Whether `path` is one of `held` or inside one, and not left out of the build
    context by .dockerignore. The last copy of a path is the one the image keeps."""
    for entry in reversed(held):
        if path == entry.path or entry.path in path.parents:
            if entry.context is None:
                return True
            inside = path.relative_to(entry.path)
            source = PurePosixPath(entry.context) / inside
            return not ignored(str(source))
    return False


def build(stages: Sequence[Stage], makes: Mapping[str, Sequence[str]]) -> dict[str, Image]:
    """Every stage built in order, by name (the last also under ""). `makes` says which
    paths (relative to the working directory) each RUN command leaves behind."""
    images: dict[str, Image] = {}
    for stage in stages:
        parent = images.get(stage.base)
        image = Image(stage)
        if parent is not None:
            image.workdir = parent.workdir
            image.held = list(parent.held)
            image.env = dict(parent.env)
        for instruction in stage.instructions:
            match instruction.keyword:
                case "WORKDIR":
                    image.workdir = image.workdir / instruction.arguments
                case "ENV":
                    for assignment in shlex.split(instruction.arguments):
                        name, _, value = assignment.partition("=")
                        image.env[name] = value
                case "COPY":
                    *sources, target = instruction.arguments.split(" ")
                    into_dir = target.endswith("/") or target == "." or len(sources) > 1
                    # From another stage or image: nothing of the build context.
                    from_context = "from" not in instruction.flags
                    for source in sources:
                        path = image.at(target)
                        if into_dir:
                            path = path / PurePosixPath(source).name
                        image.held.append(Held(path, source.rstrip("/") if from_context else None))
                case "RUN":
                    # BuildKit's flags (a cache mount) are the build's business; the
                    # command is the rest.
                    command = instruction.arguments
                    image.runs.append((command, list(image.held)))
                    for made in makes.get(command, ()):
                        image.held.append(Held(image.at(made), None))
                case "CMD":
                    image.cmd = instruction.exec_form()
        images[stage.name or ""] = image
    if stages:
        images[""] = images[stages[-1].name or ""]
    return images


# ------------------------------------------------------------------------ .dockerignore


class DockerIgnore:
    """The build context's exclusions: a path is left out when it, or a folder it is in,
    matches a pattern (`*` within a name, `**` across folders)."""

    def __init__(self, text: str) -> None:
        patterns = [line.strip() for line in text.splitlines()]
        patterns = [p for p in patterns if p and not p.startswith("#")]
        assert not any(p.startswith("!") for p in patterns), "exceptions are not supported"
        self.patterns = [re.compile(_pattern_regex(p.strip("/"))) for p in patterns]

    def __call__(self, path: str) -> bool:
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        return any(p.fullmatch(prefix) for p in self.patterns for prefix in prefixes)


def _pattern_regex(pattern: str) -> str:
    parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern)
    wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return "".join(wild.get(part, re.escape(part)) for part in parts)


def context_exists(root: Path, source: str) -> bool:
    """A COPY source exists in the build context (a glob must match something)."""
    if any(c in source for c in "*?["):
        return any(fnmatch.fnmatch(str(p.relative_to(root)), source) for p in root.rglob("*"))
    return (root / source).exists()


# ----------------------------------------------------------------------- what CI runs

VARIABLE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:?=\s*(.*)$")
RULE = re.compile(r"^([^\s:=#][^:=]*?)\s*:(?!=)\s*([^#]*?)\s*(?:##.*)?$")


@dataclass
class Makefile:
    variables: dict[str, str] = field(default_factory=dict)
    prerequisites: dict[str, list[str]] = field(default_factory=dict)
    recipes: dict[str, list[str]] = field(default_factory=dict)

    def expand(self, text: str, target: str = "") -> str:
        def variable(found: re.Match[str]) -> str:
            return self.expand(self.variables.get(found.group(1), ""), target)

        text = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable, text)
        return text.replace("$@", target).replace("$$", "$")

    def reached(self, goals: Sequence[str]) -> list[str]:
        """The goals and every target they depend on, order-only ones included."""
        seen: list[str] = []
        todo = list(goals)
        while todo:
            target = todo.pop(0)
            if target in seen or target not in self.prerequisites:
                continue
            seen.append(target)
            todo += self.prerequisites[target]
        return seen

    def commands(self, goals: Sequence[str]) -> set[str]:
        """Every recipe line `make <goals>` may run, expanded, without make's `@`."""
        return {line for target in self.reached(goals) for line in self.recipes[target]}


def parse_makefile(text: str) -> Makefile:
    makefile = Makefile()
    target: str | None = None
    lines = text.replace("\\\n", " ").splitlines()
    for line in lines:
        if line.startswith("\t") and target is not None:
            recipe = re.sub(r"\s+", " ", makefile.expand(line.strip(), target)).lstrip("@-")
            makefile.recipes[target].append(recipe)
            continue
        target = None
        if found := VARIABLE.match(line):
            makefile.variables[found.group(1)] = found.group(2).strip()
        elif (found := RULE.match(line)) and not line.startswith("."):
            names = makefile.expand(found.group(1)).split()
            needs = makefile.expand(found.group(2)).replace("|", " ").split()
            for name in names:
                makefile.prerequisites[name] = needs
                makefile.recipes.setdefault(name, [])
            target = names[0] if len(names) == 1 else None
    return makefile


def ci_goals(ci_script: str) -> list[str]:
    """The targets CI's entry point makes (`make test`)."""
    # The words after `make` up to the first that is no target (a redirection, a pipe).
    goals = [
        goal
        for found in re.findall(r"^make\s+(.+)$", ci_script, re.M)
        for goal in itertools.takewhile(re.compile(r"[\w.-]+").fullmatch, found.split())
    ]
    assert goals, "CI's entry point runs no make target"
    return goals
