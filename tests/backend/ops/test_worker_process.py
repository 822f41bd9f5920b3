"""`parley worker`: the sequence scheduler in a process of its own, with no HTTP listener,
run as an operator runs it next to API replicas (real clock, the local Twilio emulator).

The helpers here (a data folder with a send-now sequence, subscribed and enrolled
people, a worker's environment) are shared with test_scheduler_crash.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import product
from pathlib import Path

import yaml
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from sqlalchemy import select

from backend import data_files
from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, Purpose, Source
from backend.core.audit import SystemActor
from backend.core.clock import SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.identities import IdentityKind
from backend.core.models import Enrolment, SequenceWork
from backend.core.settings import PROJECT_ROOT
from backend.devtools.twilio_emulator import TwilioEmulator
from backend.people.profiles import ProfileDirectory
from backend.sequences.enrolment import TriggerEvent, enrol
from tests.backend.conftest import migrate
from tests.servers import free_port

PARLEY = [sys.executable, "-m", "backend"]
TOKEN = "worker-test-auth-token"  # the emulator's, a throwaway
ACCOUNT = "AC" + "0" * 32
SECRET = "worker-test-secret-key"
SEQUENCE = "welcome"
# Not a time limit on the behaviour, a guard against hanging: past it the test fails.
# Generous, because starting a worker on a busy two-core machine can take 20 s.
PATIENCE = timedelta(minutes=5)

ServerFactory = Callable[[Application], Awaitable[TestServer]]


def quiet_hours_far_from(now: datetime) -> tuple[str, str]:
    """A minute of quiet hours (in UTC) twelve hours from `now`: the guard is checked at
    every send but holds nothing back while a test runs, whatever the time of day."""
    start = now + timedelta(hours=12)
    return start.strftime("%H:%M"), (start + timedelta(minutes=1)).strftime("%H:%M")


def follow_up_data(folder: Path, email: bool = False) -> Path:
    """A data folder: the shipped business (its quiet hours moved to a minute twelve
    hours away, since these workers run on the real clock), scoring and segments, and
    one marketing sequence whose only step texts the person as soon as they are
    enrolled (with `email`, then e-mails them too)."""
    (folder / "sequences").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "data" / "scoring.yml", folder)
    business = yaml.safe_load((PROJECT_ROOT / "data" / "business.yml").read_text())
    quiet_from, quiet_until = quiet_hours_far_from(datetime.now(UTC))
    business["follow_ups"]["quiet_hours"] = {"from": quiet_from, "until": quiet_until}
    if email:  # a text and an e-mail at once: two marketing messages in a day
        business["follow_ups"]["caps"] = {"per_24h": 2, "per_7d": 3}
    (folder / "business.yml").write_text(yaml.safe_dump(business))
    shutil.copytree(PROJECT_ROOT / "data" / "segments", folder / "segments")
    (folder / "sequences" / f"{SEQUENCE}.yml").write_text(
        """
trigger: api
entry: {consent: sms}
steps:
  - id: hello
    send:
      channel: sms
      template: >-
        Hi {{ profile.first_name or "there" }}, welcome to {{ business.name }}.
        Reply STOP to opt out.
"""
        + (EMAIL_STEP if email else "")
    )
    return folder


EMAIL_STEP = """
  - id: welcome-email
    send:
      channel: email
      subject: "Welcome, {{ profile.first_name }}"
      template: "<p>Hi {{ profile.first_name }}, here is how to get started.</p>"
"""


def address(index: int) -> str:
    return f"person{index}@example.com"


def number(index: int) -> str:
    return f"+1415{2_000_000 + index:07d}"


async def subscribe_and_enrol(
    database_url: str, data_dir: Path, numbers: Sequence[str], email: bool = False
) -> list[uuid.UUID]:
    """Each number becomes a person (time zone UTC) who granted and confirmed SMS
    marketing consent (with `email`, also an address, `address(i)`, with e-mail
    marketing confirmed) and is enrolled in the sequence: its first step is due now."""
    clock = SystemClock()
    rules = data_files.load_scoring(data_dir)
    [sequence] = [s for s in data_files.load_sequences(data_dir) if s.name == SEQUENCE]
    directory = ProfileDirectory(clock=clock, rules=rules, erasure_key=SECRET.encode())
    engine = create_engine(database_url)
    enrolled: list[uuid.UUID] = []
    try:
        sessions = create_session_factory(engine)
        for start in range(0, len(numbers), 100):
            async with sessions.begin() as session:
                for index, phone in enumerate(numbers[start : start + 100], start):
                    identified = await directory.identify(
                        session, kind=IdentityKind.SMS, address=phone,
                        fields={"first_name": f"Person{index}", "timezone": "UTC"},
                    )  # fmt: skip
                    profile = identified.profile
                    channels = [(Channel.SMS, Source.SMS_KEYWORD)]
                    if email:
                        channels.append((Channel.EMAIL, Source.EMAIL_LINK))
                        await directory.add_identity(
                            session, profile, IdentityKind.EMAIL, address(index), None
                        )
                    for (channel, source), confirm in product(channels, (False, True)):
                        entry = consent.Entry(
                            channel, Purpose.MARKETING, Action.GRANT, source, reply="YES",
                            confirm=confirm,
                        )  # fmt: skip
                        await consent.record(session, profile.id, entry, clock, SystemActor("test"))
                    await enrol(session, sequence, profile, TriggerEvent("enrolled"), clock, rules)
                    enrolled.append(profile.id)
    finally:
        await engine.dispose()
    return enrolled


def worker_env(
    tmp_path: Path, database_url: str, data_dir: Path, twilio_url: str, **extra: str
) -> dict[str, str]:
    """What an operator sets for a worker process (nothing leaks in from this shell)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_DATA_DIR": str(data_dir),
        "PARLEY_SECRET_KEY": SECRET,
        "PARLEY_TWILIO_ACCOUNT_SID": ACCOUNT,
        "PARLEY_TWILIO_AUTH_TOKEN": TOKEN,
        "PARLEY_TWILIO_API_URL": twilio_url,
        # Status callbacks would go to an API replica here: none runs in these tests.
        "PARLEY_BACKEND_PORT": str(free_port()),
        "PARLEY_SCHEDULER_POLL_SECONDS": "0.2",
        **extra,
    }


async def start_worker(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("wb") as sink:
        return await asyncio.create_subprocess_exec(
            *PARLEY, "worker", env=env, stdout=sink, stderr=sink, cwd=PROJECT_ROOT
        )


async def wait_for_log(process: asyncio.subprocess.Process, log: Path, text: str) -> str:
    """The worker's log once `text` is in it; fails if the worker ends or takes too long."""
    deadline = datetime.now(UTC) + PATIENCE
    while text not in (seen := await asyncio.to_thread(log.read_text, errors="replace")):
        assert process.returncode is None, f"the worker ended ({process.returncode}):\n{seen}"
        assert datetime.now(UTC) < deadline, f"no {text!r} in the worker's log:\n{seen}"
        await asyncio.sleep(0.05)
    return seen


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), PATIENCE.total_seconds())
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


async def connection_refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


async def test_parley_worker_sends_due_follow_ups_without_serving_http_and_stops_on_sigterm(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    data_dir = follow_up_data(tmp_path / "data")
    await migrate(database_url)
    [person] = await subscribe_and_enrol(database_url, data_dir, [number(1)])
    twilio = TwilioEmulator(ACCOUNT, TOKEN)
    twilio_server = await aiohttp_server(twilio.app())
    env = worker_env(
        tmp_path, database_url, data_dir, str(twilio_server.make_url("")).rstrip("/"),
        # As on an API replica: the worker process runs its scheduler regardless.
        PARLEY_SCHEDULER_ENABLED="false",
    )  # fmt: skip
    log = tmp_path / "worker.log"
    worker = await start_worker(env, log)
    try:
        started = await wait_for_log(worker, log, "worker.started")
        deadline = datetime.now(UTC) + PATIENCE
        while not twilio.messages:
            assert worker.returncode is None, log.read_text()
            assert datetime.now(UTC) < deadline, f"nothing was sent:\n{log.read_text()}"
            await asyncio.sleep(0.05)
        # The API's port stays closed: this process serves no HTTP.
        assert await connection_refused(int(env["PARLEY_BACKEND_PORT"]))
    finally:
        code = await stop(worker)
    assert code == 0, log.read_text()

    [text] = twilio.messages.values()
    assert (text.to, text.from_) == (number(1), "+15005550006")
    assert text.body == "Hi Person0, welcome to Brightdesk. Reply STOP to opt out."
    [line] = [x for x in started.splitlines() if "worker.started" in x]
    assert "owner=worker-" in line and f"pid={worker.pid}" in line
    assert "worker.stopped" in log.read_text()

    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session:
            [work] = await session.scalars(select(SequenceWork))
            enrolment = await session.scalar(
                select(Enrolment).where(Enrolment.profile_id == person)
            )
    finally:
        await engine.dispose()
    assert (work.step, work.outcome, work.lease_owner) == ("hello", "sent", None)
    assert enrolment is not None and enrolment.status == "completed"
