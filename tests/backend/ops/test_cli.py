"""The `parley` command line, run as an operator runs it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from backend.api import tokens as api_tokens
from backend.console import users as console_users
from backend.core.clock import SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.settings import PROJECT_ROOT
from tests.servers import free_port

PARLEY = [sys.executable, "-m", "backend"]


def parley(*args: str, var: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{var / 'parley.db'}",
        **env,
    }
    return subprocess.run(
        [*PARLEY, *args], env=environment, capture_output=True, text=True, timeout=120
    )


async def test_token_create_prints_a_token_once_that_then_authenticates(tmp_path: Path) -> None:
    result = parley("token", "create", "--role", "marketer", "--name", "campaigns", var=tmp_path)
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip()
    assert secret.startswith("pk_")
    assert "shown once" in result.stderr

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    try:
        async with create_session_factory(engine)() as session:
            token = await api_tokens.authenticate(session, secret)
    finally:
        await engine.dispose()
    assert token is not None
    assert (token.role, token.name) == ("marketer", "campaigns")
    assert token.token_hash != secret


def test_token_create_refuses_an_unknown_role(tmp_path: Path) -> None:
    result = parley("token", "create", "--role", "root", var=tmp_path)
    assert result.returncode == 2
    assert "'root' is not one of 'admin', 'marketer', 'service', 'analyst', 'agent'" in (
        result.stderr
    )


async def test_user_create_makes_a_console_account_that_signs_in(tmp_path: Path) -> None:
    port = free_port()  # printed in the sign-in address, never the 8000 `make run` may hold

    def create(email: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PARLEY, "user", "create", "--email", email, "--role", "agent", "--password-stdin"],
            env={**os.environ, "PARLEY_VAR_DIR": str(tmp_path), "PARLEY_BACKEND_PORT": str(port),
                 "PARLEY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"},
            input=password + "\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    made = create("Sam@Example.com", "a long enough password")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == (
        f"sam@example.com may sign in at http://127.0.0.1:{port}/console as agent"
    )
    assert "a long enough password" not in made.stdout + made.stderr
    again = create("sam@example.com", "a long enough password")
    assert again.returncode == 1 and "has an account already" in again.stderr
    short = create("kim@example.com", "short")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr

    generated = parley(
        "user", "create", "--email", "kim@example.com", "--role", "analyst",
        "--generate-password", var=tmp_path,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    password = generated.stdout.splitlines()[1].removeprefix("password: ")
    assert len(password) >= 20 and "shown once" in generated.stderr
    listed = parley("user", "list", var=tmp_path)
    assert listed.stdout.split() == ["kim@example.com", "analyst", "sam@example.com", "agent"]
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    try:
        async with create_session_factory(engine).begin() as session:
            signed = await console_users.sign_in(
                session, SystemClock(), "sam@example.com", "a long enough password"
            )
            wrong = await console_users.sign_in(session, SystemClock(), "sam@example.com", "no")
            kim = await console_users.sign_in(session, SystemClock(), "kim@example.com", password)
    finally:
        await engine.dispose()
    assert signed.user is not None and signed.user.role == "agent"
    assert signed.user.password_hash.startswith("$argon2id$")
    assert wrong.user is None
    assert kim.user is not None and kim.user.role == "analyst"

    # Sam leaves the team: the account no longer signs in, until enabled again.
    disabled = parley("user", "disable", "--email", "SAM@example.com", var=tmp_path)
    assert disabled.stdout.strip() == "sam@example.com is disabled", disabled.stderr
    listed = parley("user", "list", var=tmp_path)
    assert listed.stdout.splitlines()[1].split() == ["sam@example.com", "agent", "disabled"]
    unknown = parley("user", "disable", "--email", "nobody@example.com", var=tmp_path)
    assert unknown.returncode == 1 and "nobody@example.com has no account" in unknown.stderr

    async def sam_signs_in() -> bool:
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
        try:
            async with create_session_factory(engine).begin() as session:
                attempt = await console_users.sign_in(
                    session, SystemClock(), "sam@example.com", "a long enough password"
                )
        finally:
            await engine.dispose()
        return attempt.user is not None

    assert not await sam_signs_in()
    assert parley("user", "enable", "--email", "sam@example.com", var=tmp_path).returncode == 0
    assert await sam_signs_in()


def test_db_upgrade_applies_migrations_once(tmp_path: Path) -> None:
    first = parley("db", "upgrade", var=tmp_path)
    assert first.returncode == 0, first.stderr
    revisions = sorted(
        p.name.split("_")[0]
        for p in (PROJECT_ROOT / "backend" / "migrations" / "versions").glob("0*.py")
    )
    assert first.stdout.strip() == "applied " + ", ".join(revisions)
    second = parley("db", "upgrade", var=tmp_path)
    assert second.stdout.strip() == "the database is up to date"


@pytest.mark.parametrize("command", ["backend", "worker", "consume-events"])
def test_every_process_refuses_a_database_that_lacks_migrations(
    tmp_path: Path, command: str
) -> None:
    result = parley(command, var=tmp_path)
    assert result.returncode == 1
    assert "run 'parley db upgrade' first" in result.stderr


@pytest.mark.parametrize("runtime", ["bot", "backend"])
def test_a_missing_python_is_named_with_how_to_get_it(tmp_path: Path, runtime: str) -> None:
    # A PATH with the few tools the script uses, and no Python and no pyenv at all.
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sort", "cat", "ls"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    bare = {"PATH": str(tools), "PYENV_ROOT": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        ["/bin/bash", str(PROJECT_ROOT / "scripts" / "find-python"), runtime],
        env=bare, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    wanted = "Python 3.10 was not found" if runtime == "bot" else "no Python 3.11 or later"
    assert wanted in result.stderr
    assert "pyenv install" in result.stderr


def test_the_backend_names_the_line_of_a_mistake_in_data_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "segments").mkdir(parents=True)
    (data / "segments" / "vip.yml").write_text("rule:\n  field: colour\n  op: eq\n  value: red\n")
    assert parley("db", "upgrade", var=tmp_path).returncode == 0
    result = parley("backend", var=tmp_path, PARLEY_DATA_DIR=str(data))
    assert result.returncode == 1
    assert f"{data / 'segments' / 'vip.yml'}:2: rule: unknown field 'colour'" in result.stderr


def test_a_listed_token_can_be_revoked_by_its_prefix_and_then_fails(tmp_path: Path) -> None:
    secret = parley(
        "token", "create", "--role", "analyst", "--name", "reports", var=tmp_path
    ).stdout.strip()
    listed = parley("token", "list", var=tmp_path).stdout
    assert f"{secret[:10]}…  analyst" in listed
    assert secret not in listed
    assert parley("token", "revoke", "pk_", var=tmp_path).returncode == 1  # too short
    revoked = parley("token", "revoke", secret[:10], var=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "reports" not in parley("token", "list", var=tmp_path).stdout


def test_rasa_warnings_fail_validation_except_the_known_rasa_quirks(tmp_path: Path) -> None:
    from backend.ops.rasa_project import form_questions, unexpected_warnings

    (tmp_path / "a.yml").write_text(
        "forms:\n  lead_form:\n    required_slots: [work_email]\nresponses: {}\n"
    )
    output = (
        "io.py:100: UserWarning: The following duplicated intents have been found across "
        "multiple domain files: faq\n  More info at https://rasa.com/docs/rasa/domain\n"
        "io.py:100: UserWarning: The utterance 'utter_x' is not used in any story or rule.\n"
        "io.py:100: UserWarning: The utterance 'utter_ask_work_email' is not used in any "
        "story or rule.\n"
        "io.py:100: UserWarning: The utterance 'utter_ask_company' is not used in any "
        "story or rule.\n"
    )
    assert unexpected_warnings(output, form_questions(tmp_path)) == [
        "The utterance 'utter_x' is not used in any story or rule.",
        "The utterance 'utter_ask_company' is not used in any story or rule.",
    ]


def test_the_twilio_emulator_needs_an_auth_token(tmp_path: Path) -> None:
    result = parley("twilio-emulator", var=tmp_path, PARLEY_TWILIO_AUTH_TOKEN="")
    assert result.returncode != 0
    assert "PARLEY_TWILIO_AUTH_TOKEN" in result.stderr


async def test_the_twilio_emulator_serves_the_twilio_library(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from backend.messaging.twilio_api import twilio_client

    caplog.set_level(logging.INFO)  # the library's own request logs stay out even so

    port = free_port()
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(tmp_path),
        "PARLEY_TWILIO_AUTH_TOKEN": "local-token",
        "PARLEY_TWILIO_EMULATOR_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(*PARLEY, "twilio-emulator", env=env)
    url = f"http://127.0.0.1:{port}"
    client = twilio_client("AC" + "0" * 32, "local-token", api_url=url)
    try:
        for _ in range(100):
            try:
                sent = await client.messages.create_async(
                    to="+14155552671", from_="+15557654321", body="hello"
                )
                break
            except OSError:  # not listening yet
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the emulator did not come up")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/emulator/messages") as response,
        ):
            recorded = await response.json()
        assert [(m["sid"], m["body"]) for m in recorded] == [(sent.sid, "hello")]
        listed = await client.messages.list_async(to="+14155552671", from_="+15557654321")
        assert [m.sid for m in listed] == [sent.sid]
        assert "4155552671" not in caplog.text
    finally:
        await client.http_client.close()
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=15)
