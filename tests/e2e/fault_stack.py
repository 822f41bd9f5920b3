"""A whole Parley whose processes can be killed and started again one at a time, on a
private PostgreSQL server that can be restarted, with a steady stream of signed texts
through the local Twilio; and what became of every text Twilio was told was taken.

Used by tests/e2e/test_sms_faults.py (which asserts on the counts) and by `make bench`
(which reports them). The processes are the ones `parley run` starts, with the same
commands and settings (backend.ops.launcher.services), but started here one by one, since
`parley run` stops everything when one process dies. The emulator plays Twilio and is
never killed: a webhook that fails is followed by Twilio's fallback (Rasa's SMS webhook).

PostgreSQL refuses to run as root, so as root the private server runs as the
`postgres` user. Its data lives in a temporary directory; restarting it is an
immediate shutdown (a crash: WAL replay at the next start) and a start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import asyncpg

from backend.core.clock import SystemClock
from backend.core.settings import PROJECT_ROOT, Settings
from backend.ops import launcher
from backend.ops.rasa_project import RasaProject
from backend.ops.supervisor import Service
from tests.servers import free_port

BUSINESS = "+15005550006"
# What people text: a conversation each, some ending in STOP.
SCRIPT = (
    "hi",
    "my name is Sam",
    "how much is the team plan?",
    "what can you do?",
    "is there a free trial?",
    "thanks",
)


class PostgresMissing(RuntimeError):
    """PostgreSQL's server programs are not installed here."""


@dataclass
class PrivatePostgres:
    """A PostgreSQL server of the test's own, on a free port, in `root`."""

    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @staticmethod
    def bin_dir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=_version)
        if not found:
            raise PostgresMissing("PostgreSQL's server programs (pg_ctl, initdb) are missing")
        return found[-1].parent

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir() / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def crash(self) -> None:
        """Stop at once, as a crash would (the next start replays the WAL)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def restart(self, down_seconds: float = 2.0) -> None:
        self.crash()
        time.sleep(down_seconds)
        self.start()

    def destroy(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str, driver: str = "") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://postgres@127.0.0.1:{self.port}/{database}"

    async def create_database(self, name: str) -> None:
        connection = await asyncpg.connect(self.url("postgres"))
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in path.parent.parent.name.split(".") if p.isdigit())


@dataclass
class Process:
    service: Service
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            self.popen = subprocess.Popen(
                self.service.argv, env=self.env, cwd=self.service.cwd or PROJECT_ROOT,
                stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: no shutdown, as when a machine or a container dies."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()

    async def healthy(self, timeout: float) -> float:
        """Wait until the process answers its health check; the seconds it took."""
        began = time.monotonic()
        async with aiohttp.ClientSession() as client:
            while time.monotonic() - began < timeout:
                if self.popen is not None and self.popen.poll() is not None:
                    raise RuntimeError(f"{self.service.name} exited:\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    if await self.service.health(client):
                        return time.monotonic() - began
                await asyncio.sleep(0.5)
        raise RuntimeError(f"{self.service.name} not healthy in {timeout} s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@dataclass
class Stack:
    settings: Settings
    postgres: PrivatePostgres
    processes: dict[str, Process]
    var: Path

    @property
    def twilio(self) -> str:
        return self.settings.resolved_twilio_api_url


@contextlib.asynccontextmanager
async def running_stack(var: Path, out: TextIO, **extra: str) -> AsyncIterator[Stack]:
    """The private PostgreSQL, migrated, and every process of `parley run` on it."""
    # Its own directory, which the postgres user can reach (a test's is root's alone).
    postgres = PrivatePostgres(Path(tempfile.mkdtemp(prefix="parley-pg-")))
    postgres.create()
    processes: dict[str, Process] = {}
    try:
        for name in ("parley", "rasa"):
            await postgres.create_database(name)
        ports = {name: free_port() for name in ("backend", "rasa", "action_server")}
        values = {
            "var_dir": str(var),
            "backend_port": str(ports["backend"]),
            "rasa_port": str(ports["rasa"]),
            "action_server_port": str(ports["action_server"]),
            "twilio_emulator_port": str(free_port()),
            "mail_sink_smtp_port": str(free_port()),
            "mail_sink_port": str(free_port()),
            "database_url": postgres.url("parley", "asyncpg"),
            "rasa_tracker_store_url": postgres.url("rasa"),
            "secret_key": "fault-tests-secret-key",
            "log_level": "info",
            **extra,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
        env |= {f"PARLEY_{k.upper()}": v for k, v in values.items()}
        settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
        project = RasaProject.from_settings(settings)
        model = await launcher.ensure_model(project, out)
        run = await launcher.prepare_database(settings, SystemClock())
        for service in launcher.services(settings, project, model, run):
            process = Process(service, {**env, **service.env}, var / f"{service.name}.log")
            processes[service.name] = process
            process.start()
            await process.healthy(600)
        yield Stack(settings, postgres, processes, var)
    finally:
        for process in reversed(processes.values()):
            process.stop()
        postgres.destroy()


# ------------------------------------------------------------------ texts and faults


@dataclass
class Traffic:
    """Texts sent so far: what the emulator answered for each, and when."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)


async def converse(
    stack: Stack, senders: list[str], stops: set[str], rate: float, until: asyncio.Event,
    traffic: Traffic,
) -> None:  # fmt: skip
    """Each sender works through SCRIPT (again and again) until `until` is set, then
    texts STOP if it is one of `stops`; together about `rate` texts a second."""
    gap = len(senders) / rate

    async def person(number: str, client: aiohttp.ClientSession) -> None:
        await asyncio.sleep(random.uniform(0, gap))
        for turn in range(10_000):
            if until.is_set():
                break
            await _text(client, stack, number, SCRIPT[turn % len(SCRIPT)], traffic)
            await asyncio.sleep(gap)
        if number in stops:
            await _text(client, stack, number, "STOP", traffic)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as client:
        await asyncio.gather(*(person(n, client) for n in senders))


async def _text(
    client: aiohttp.ClientSession, stack: Stack, number: str, body: str, traffic: Traffic
) -> None:
    began = time.perf_counter()
    async with client.post(
        f"{stack.twilio}/emulator/sms", json={"from": number, "to": BUSINESS, "body": body}
    ) as response:
        answer = await response.json()
    if answer.get("webhook_status") == 200:
        traffic.ack_ms.append((time.perf_counter() - began) * 1000)
    traffic.sent.append({"from": number, "body": body, **answer})


@dataclass
class Fault:
    target: str  # backend, actions, rasa or postgres
    at: float  # seconds into the run
    back_after: float  # seconds until it was healthy again


async def inject(
    stack: Stack, plan: list[str], settle: float, out: TextIO, began: float
) -> list[Fault]:
    """Kill (or restart) each target in turn and start it again; the next fault comes
    once it is healthy and traffic has flowed for `settle` seconds, except after Rasa,
    which takes over a minute to load its model: the next faults come while it loads
    (it is back before it is killed again). What was done."""
    done: list[Fault] = []
    loading: dict[str, asyncio.Task[None]] = {}

    async def back(fault: Fault, process: Process) -> None:
        fault.back_after = 1.0 + await process.healthy(600)
        out.write(
            f"fault: {fault.target} at {fault.at:.0f} s, back after {fault.back_after:.1f} s\n"
        )
        out.flush()

    for target in plan:
        if target in loading:
            await loading.pop(target)
        fault = Fault(target, time.monotonic() - began, 0.0)
        done.append(fault)
        if target == "postgres":
            await asyncio.to_thread(stack.postgres.restart)
            fault.back_after = 2.0
            out.write(f"fault: postgres at {fault.at:.0f} s, back after 2.0 s\n")
        else:
            process = stack.processes[target]
            process.kill()
            await asyncio.sleep(1.0)
            process.start()
            coming_back = asyncio.create_task(back(fault, process))
            if target == "rasa":
                loading[target] = coming_back
            else:
                await coming_back
        await asyncio.sleep(settle)
    for coming_back in loading.values():
        await coming_back
    return done


# ------------------------------------------------------------------ what became of it


@dataclass
class Outcome:
    """What became of every text, counted after the faults and once every turn ended."""

    sent: int = 0
    acknowledged: int = 0
    by_fallback: int = 0
    not_acknowledged: int = 0
    acknowledged_not_recorded: int = 0
    answers_failed: int = 0
    answers_pending: int = 0
    for_the_bot: int = 0
    in_conversation_once: int = 0
    missing_from_conversation: int = 0
    in_conversation_twice: int = 0
    stops: int = 0
    stops_applied: int = 0
    stop_confirmations: int = 0
    replies_sent: int = 0
    sent_without_record: int = 0
    sent_twice: int = 0
    faults: list[Fault] = field(default_factory=list)
    ack_p99_ms: float = 0.0

    def lines(self) -> list[str]:
        return [
            f"texts sent {self.sent}: acknowledged {self.acknowledged} "
            f"({self.by_fallback} through Twilio's fallback), not acknowledged "
            f"{self.not_acknowledged}",
            f"acknowledged but not recorded {self.acknowledged_not_recorded}; answers failed "
            f"{self.answers_failed}, still pending {self.answers_pending}",
            f"texts for the bot {self.for_the_bot}: in their conversation once "
            f"{self.in_conversation_once}, missing {self.missing_from_conversation}, "
            f"twice or more {self.in_conversation_twice}",
            f"STOP texts {self.stops}: applied {self.stops_applied}, confirmed "
            f"{self.stop_confirmations}",
            f"texts Parley sent {self.replies_sent}: without a record {self.sent_without_record},"
            f" the same reply twice {self.sent_twice}",
            "faults: " + ", ".join(f"{f.target} at {f.at:.0f} s" for f in self.faults),
        ]


async def drain(stack: Stack, timeout: float) -> None:
    """Wait until no text's answer is pending (the bot answers the backlog)."""
    connection = await asyncpg.connect(stack.postgres.url("parley"))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = await connection.fetchval(
                "SELECT count(*) FROM messages WHERE turn = 'pending'"
            )
            if not pending:
                return
            await asyncio.sleep(1)
    finally:
        await connection.close()


async def outcome(stack: Stack, traffic: Traffic) -> Outcome:
    result = Outcome(sent=len(traffic.sent))
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{stack.twilio}/emulator/inbound") as response:
            played: list[dict[str, Any]] = await response.json()
        async with client.get(f"{stack.twilio}/emulator/messages") as response:
            twilio_sent: list[dict[str, Any]] = await response.json()
    acked = [t for t in played if t["acknowledged"]]
    result.acknowledged = len(acked)
    result.by_fallback = sum(1 for t in acked if t["webhook_status"] != 200)
    result.not_acknowledged = len(played) - len(acked)

    parley = await asyncpg.connect(stack.postgres.url("parley"))
    rasa = await asyncpg.connect(stack.postgres.url("rasa"))
    try:
        rows = await parley.fetch(
            "SELECT id, provider_sid, from_address, body, keyword, turn, profile_id "
            "FROM messages WHERE direction = 'inbound'"
        )
        by_sid = {r["provider_sid"]: r for r in rows}
        result.acknowledged_not_recorded = sum(1 for t in acked if t["sid"] not in by_sid)
        turns = Counter(r["turn"] for r in rows)
        result.answers_failed, result.answers_pending = turns["failed"], turns["pending"]
        for text in acked:
            row = by_sid.get(text["sid"])
            if row is None:
                continue
            if row["keyword"] is not None:
                if row["keyword"] == "stop":
                    result.stops += 1
                    result.stops_applied += await _withdrawn(parley, row["profile_id"])
                    result.stop_confirmations += await parley.fetchval(
                        "SELECT count(*) FROM messages WHERE in_reply_to_id = $1 "
                        "AND purpose = 'compliance' AND provider_sid IS NOT NULL", row["id"],
                    )  # fmt: skip
                continue
            result.for_the_bot += 1
            copies = await rasa.fetchval(
                "SELECT count(*) FROM events WHERE sender_id = $1 AND type_name = 'user' "
                "AND data LIKE $2", row["from_address"], f'%"message_id": "{text["sid"]}"%',
            )  # fmt: skip
            if copies == 1:
                result.in_conversation_once += 1
            elif copies == 0:
                result.missing_from_conversation += 1
            else:
                result.in_conversation_twice += 1
        known = {
            r["provider_sid"]: r
            for r in await parley.fetch(
                "SELECT provider_sid, in_reply_to_id, body, part FROM messages "
                "WHERE direction = 'outbound' AND provider_sid IS NOT NULL"
            )
        }
    finally:
        await parley.close()
        await rasa.close()
    result.replies_sent = len(twilio_sent)
    result.sent_without_record = sum(1 for m in twilio_sent if m["sid"] not in known)
    replies = Counter(
        (r["in_reply_to_id"], r["part"], r["body"])
        for r in known.values()
        if r["in_reply_to_id"] is not None
    )
    result.sent_twice = sum(n - 1 for n in replies.values() if n > 1)
    ordered = sorted(traffic.ack_ms)
    if ordered:
        result.ack_p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return result


async def _withdrawn(connection: asyncpg.Connection, profile_id: Any) -> int:
    states = await connection.fetch(
        "SELECT purpose, state FROM consent_states WHERE profile_id = $1 AND channel = 'sms'",
        profile_id,
    )
    found = {r["purpose"]: r["state"] for r in states}
    return int(found.get("marketing") == found.get("transactional") == "withdrawn")


async def run_faults(
    var: Path, out: TextIO, plan: list[str], senders: int = 24, rate: float = 3.0,
    settle: float = 8.0, drain_seconds: float = 600.0,
    on_stack: Callable[[Stack], None] | None = None,
) -> Outcome:  # fmt: skip
    """Start the stack, stream texts, inject the faults of `plan` one after another,
    stop the stream, let every turn finish, and count what became of each text."""
    numbers = [f"+1415555{3000 + n:04d}" for n in range(senders)]
    stops = set(numbers[::2])
    async with running_stack(var, out, sms_turn_lease_seconds="20") as stack:
        if on_stack is not None:
            on_stack(stack)
        traffic, until = Traffic(), asyncio.Event()
        began = time.monotonic()
        stream = asyncio.create_task(converse(stack, numbers, stops, rate, until, traffic))
        await asyncio.sleep(settle)
        faults = await inject(stack, plan, settle, out, began)
        until.set()
        await stream
        await drain(stack, drain_seconds)
        result = await outcome(stack, traffic)
        result.faults = faults
        return result


if __name__ == "__main__":  # a quick manual run: python -m tests.e2e.fault_stack
    found = asyncio.run(
        run_faults(Path(tempfile.mkdtemp(prefix="parley-faults-")), sys.stdout,
                   ["backend", "actions", "postgres", "rasa"])
    )  # fmt: skip
    sys.stdout.write("\n".join(found.lines()) + "\n")
