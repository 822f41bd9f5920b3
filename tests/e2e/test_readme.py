"""Every command in the README's shell blocks, run as a newcomer would run it, against
the shared `make run` (tests/e2e/conftest.py), with what the README shows it printing
checked against what it prints.

- The README's addresses (127.0.0.1:8000, :5005, :8010, :8026) are this run's ports, the
  README's `sender` a name of this test's own; nothing else is changed: the README's
  phone numbers are used as written.
- A comment line after a command is what it prints. `…` or `...` ends a text that goes
  on; a JSON answer must have every key and value the README shows.
- A placeholder such as `CA…` in a command is the id the previous command printed.
- `make run` is the command the shared run was started with; `make test` is the one
  running these tests. Nothing in the README needs a real account.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.e2e.conftest import ROOT, Parley

README = ROOT / "README.md"
# Commands not run here, and why.
NOT_RUN = {
    "make run": "the shared run of these tests is started with it",
    "make test": "it is what runs these tests",
}
BASH = shutil.which("bash") or "/bin/bash"
ELLIPSIS = re.compile(r"\s*(…|\.\.\.)$")


@dataclass
class Command:
    line: str
    expected: list[str] = field(default_factory=list)


def shell_blocks(text: str) -> list[list[Command]]:
    """The README's ```sh blocks: their commands (continuation lines joined, inline
    comments dropped), each with the comment lines that follow it."""
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        commands: list[Command] = []
        for line in body.replace("\\\n", " ").splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                if commands:
                    commands[-1].expected.append(stripped[1:].strip())
            elif stripped:
                commands.append(Command(re.sub(r"\s{2,}#.*$", "", stripped)))
        blocks.append(commands)
    return blocks


def test_the_readme_has_the_commands_this_test_knows_how_to_read() -> None:
    blocks = shell_blocks(README.read_text())
    lines = [c.line for block in blocks for c in block]
    assert "make run" in lines and "make test" in lines
    assert any(line.startswith(".venv/bin/parley sms") for line in lines)
    assert sum(1 for line in lines if line.startswith("curl")) >= 6


def test_every_command_in_the_readme_does_what_the_readme_says(parley: Parley) -> None:
    ran = Readme(parley)
    for block in shell_blocks(README.read_text()):
        for command in block:
            ran.run(command)
    assert ran.count >= 10


def test_make_run_prints_the_addresses_the_readme_shows(parley: Parley) -> None:
    shown = re.search(r"```\n(\[parley\] Parley is up\..*?)```", README.read_text(), re.S)
    assert shown is not None
    output = parley.output()
    for line in shown.group(1).splitlines():
        if line.strip() and line.strip() != "...":
            assert _local(line, parley).rstrip() in output


@dataclass
class Readme:
    parley: Parley
    env: dict[str, str] = field(default_factory=dict)
    sender: str = field(default_factory=lambda: f"readme-{uuid.uuid4().hex[:8]}")
    last_output: str = ""
    count: int = 0

    def run(self, command: Command) -> None:
        if command.line in NOT_RUN:
            return
        line = self._placeholders(_local(command.line, self.parley))
        line = line.replace('"sender": "me"', f'"sender": "{self.sender}"')
        assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", line)
        script = f'printf %s "$({assignment.group(2)})"' if assignment else line
        result = subprocess.run(
            [BASH, "-c", script], env={**self.parley.env, **self.env}, cwd=ROOT,
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        where = f"README command: {command.line}\nprinted: {result.stdout}\n{result.stderr}"
        assert result.returncode == 0, where
        assert result.stdout.strip(), where
        if assignment:
            self.env[assignment.group(1)] = result.stdout.strip()
        _no_error(result.stdout, where)
        if command.expected:
            expected = [e.replace('"recipient_id":"me"', f'"recipient_id":"{self.sender}"')
                        for e in command.expected]  # fmt: skip
            _looks_like(expected, result.stdout, where)
        self.last_output = result.stdout
        self.count += 1

    def _placeholders(self, line: str) -> str:
        """`CA…`: the call the previous command started."""
        if "CA…" not in line:
            return line
        found = re.search(r'"sid": "(CA[0-9a-f]{32})"', self.last_output)
        assert found, f"no call id in what the previous command printed: {self.last_output}"
        return line.replace("CA…", found.group(1))


def _local(text: str, parley: Parley) -> str:
    """The README's addresses as this run's."""
    return (
        text.replace("http://127.0.0.1:5005", parley.rasa)
        .replace("http://127.0.0.1:8000", parley.backend)
        .replace("http://127.0.0.1:8010", parley.twilio)
        .replace("http://127.0.0.1:8026", parley.mail)
    )


def _no_error(output: str, where: str) -> None:
    try:
        answer = json.loads(output)
    except ValueError:
        return
    if isinstance(answer, dict):
        assert "error" not in answer, where
        assert not str(answer.get("type", "")).startswith("urn:parley:problem:"), where


def _looks_like(expected: list[str], output: str, where: str) -> None:
    if expected[0].startswith(("[", "{")):
        # Elided members (", …}") say there is more; elided texts are prefixes.
        shown = re.sub(r",\s*(…|\.\.\.)\s*(?=[}\]])", "", " ".join(expected))
        _json_like(json.loads(shown), json.loads(output), where)
        return
    lines = output.splitlines()
    assert len(lines) >= len(expected), where
    for want, got in zip(expected, lines, strict=False):
        _text_like(want, got, where)


def _json_like(want: Any, got: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for key, value in want.items():
            assert key in got, f"{key!r} missing: {where}"
            _json_like(value, got[key], where)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for w, g in zip(want, got, strict=True):
            _json_like(w, g, where)
    elif isinstance(want, str):
        assert isinstance(got, str), where
        _text_like(want, got, where)
    else:
        assert got == want, where


def _text_like(want: str, got: str, where: str) -> None:
    if ELLIPSIS.search(want):
        assert got.startswith(ELLIPSIS.sub("", want)), f"{got!r} is not {want!r}: {where}"
    else:
        assert got == want, f"{got!r} is not {want!r}: {where}"


@pytest.mark.parametrize(
    ("expected", "output", "agrees"),
    [
        (['{"sid": "CA…", "said": ["Hi …"], "hung_up": false, …}'],
         '{"sid": "CA12", "said": ["Hi there"], "hung_up": false, "status": "x"}', True),
        (['{"sid": "CA…", "said": ["Hi …"], "hung_up": false, …}'],
         '{"sid": "CA12", "said": ["Bye"], "hung_up": false}', False),
        (["+1 < hi", "+2 > I'm a bot: …"], "+1 < hi\n+2 > I'm a bot: hello\n+2 > more", True),
        (["+1 < hi", "+2 > I'm a bot: …"], "+1 < hi\n+2 > Hello", False),
    ],
)  # fmt: skip
def test_what_the_readme_shows_is_read_as_meant(
    expected: list[str], output: str, agrees: bool
) -> None:
    if agrees:
        _looks_like(expected, output, "")
    else:
        with pytest.raises(AssertionError):
            _looks_like(expected, output, "")
