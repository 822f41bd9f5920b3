"""The sequences benchmark of the scheduler issue: follow-up texts falling due at a steady
rate, dispatched by two `parley worker` processes on PostgreSQL through the one door to
the local Twilio emulator (its own process), guards on. For each text it measures the
lag from the step falling due to the emulator accepting it, and it counts texts lost
or sent twice; the sends per second the workers keep up is read off the emulator.

People and enrolments are loaded with COPY (as the API would have left them: an SMS
identity, SMS marketing consent granted, an active enrolment); the due steps are
written once both workers are up, due from a few seconds ahead at `rate` a second.

After the backlog run (all steps due at once), with the workers stopped, as many due
steps of the same kind are claimed by a bare `FOR UPDATE SKIP LOCKED` loop on the same
database (bench/references.py): the database's own pace, beside Parley's.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import yaml
from aiohttp import web

from backend.core.settings import PROJECT_ROOT, Settings
from bench import references
from bench.backend import POSTGRES, p99, peak_rss_mb
from bench.loading import migrate
from tests.servers import free_port

TOKEN = "bench-twilio-token"  # noqa: S105 (a throwaway token for a loopback run)
SEQUENCE = "bench-follow-up"
STEP = "hello"
# One sending number sends everything: the door paces per number, so give it a rate
# that never holds the workers back (a real one is 1 to 100 a second: ask Twilio).
SENDS_PER_SECOND = 5000
# Steps fall due from this far ahead, once both workers are up.
LEAD_SECONDS = 3.0
# Measuring stops this long after the last step fell due, whatever is left.
CUTOFF_SECONDS = 60.0


class RasaEventsStub:
    """Rasa's tracker-events endpoints (its own, and the bot's batch of them), answering
    at once: where the workers record each follow-up in the person's conversation.
    Rasa's own cost is not measured here (`--only rasa-recording` measures it)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.recorded: Counter[str] = Counter()

    async def append(self, request: web.Request) -> web.Response:
        if request.query.get("token") != self.token:
            return web.json_response({"message": "no token"}, status=401)
        await request.read()
        self.recorded[request.match_info["conversation"]] += 1
        return web.json_response({"events": []})

    async def append_batch(self, request: web.Request) -> web.Response:
        """The bot's batch endpoint (channels.conversation_batch), where the scheduler
        records a batch of follow-ups in one request."""
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"title": "no token"}, status=401)
        batch = (await request.json())["conversations"]
        for item in batch:
            self.recorded[item["conversation_id"]] += 1
        return web.json_response(
            {"appended": [item["conversation_id"] for item in batch], "failed": []}
        )

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/conversations/{conversation}/tracker/events", self.append)
        app.router.add_post("/webhooks/conversations/append", self.append_batch)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner, port


@dataclass
class SequencesMeasured:
    rate: float  # steps falling due per second
    seconds: float
    workers: int
    callbacks: bool = True  # the emulator makes the texts' status callbacks
    # All N steps fall due at once: the sends per second are the workers' capacity.
    backlog: bool = False
    due: int = 0
    texted: int = 0  # people the emulator got a text for
    repeated: int = 0  # texts beyond the first to one person
    recorded: int = 0  # follow-ups recorded in the Rasa conversation (people)
    lost: int = 0  # steps recorded as sent whose text never reached the emulator
    unfinished: int = 0  # work rows not done when measuring stopped
    sends_per_second: float = 0.0  # over the middle 80 % of the sending
    lag_ms: list[float] = field(default_factory=list)  # emulator's created - step's due_at
    outcomes: dict[str, int] = field(default_factory=dict)
    worker_cpu: list[float] = field(default_factory=list)  # share of one core, per worker
    worker_waiting: list[float] = field(default_factory=list)  # share of time waiting for a core
    emulator_cpu: float = 0.0
    postgres_cpu: float = 0.0  # every PostgreSQL process, in shares of one core
    bench_cpu: float = 0.0  # this process: the Rasa stub and the progress queries
    machine_busy: float = 0.0  # share of all the machine's cores busy
    worker_cpu_seconds: float = 0.0  # both workers together
    worker_peak_rss_mb: list[float] = field(default_factory=list)
    # The bare claim-and-mark loop over as many due steps, after a backlog run.
    reference_loops: int = 0
    reference_claimed: int = 0
    reference_claims_per_second: float = 0.0


def data_folder(folder: Path, now: datetime) -> Path:
    """The shipped business, scoring and segments, and one marketing sequence that
    texts a person as soon as its step is due, with every guard that applies to it:
    consent, quiet hours, the frequency caps, the reply exit and a goal exit."""
    (folder / "sequences").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "data" / "scoring.yml", folder)
    shutil.copytree(PROJECT_ROOT / "data" / "segments", folder / "segments")
    # Quiet hours are checked at every send; a minute half a day away holds nothing back.
    # The business's and the sequence's both apply (a sequence only adds quiet hours).
    quiet = now + timedelta(hours=12)
    business = yaml.safe_load((PROJECT_ROOT / "data" / "business.yml").read_text())
    business["follow_ups"]["quiet_hours"] = {
        "from": f"{quiet:%H:%M}", "until": f"{quiet + timedelta(minutes=1):%H:%M}",
    }  # fmt: skip
    (folder / "business.yml").write_text(yaml.safe_dump(business))
    (folder / "sequences" / f"{SEQUENCE}.yml").write_text(
        f"""
trigger: api
entry: {{consent: sms}}
exit_when: {{goal: [demo_booked], replied: true}}
quiet_hours: {{from: "{quiet:%H:%M}", until: "{quiet + timedelta(minutes=1):%H:%M}"}}
steps:
  - id: {STEP}
    send:
      channel: sms
      template: >-
        Hi {{{{ profile.first_name or "there" }}}}, {{{{ business.name }}}} here: your
        trial has a week left. Reply STOP to opt out.
"""
    )
    return folder


def number(index: int) -> str:
    return f"+1415{2_000_000 + index:07d}"


async def load_people(dsn: str, count: int, now: datetime) -> list[uuid.UUID]:
    """`count` subscribed people, each with an active enrolment; their enrolment ids."""
    profiles = [uuid.uuid4() for _ in range(count)]
    enrolments = [uuid.uuid4() for _ in range(count)]
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "profiles",
            columns=["id", "first_name", "timezone", "attributes", "score_events",
                     "score_attributes", "created_at", "updated_at"],
            records=[(p, f"Person{i}", "UTC", "{}", 0.0, 0.0, now, now)
                     for i, p in enumerate(profiles)],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "identities", columns=["id", "profile_id", "kind", "address", "created_at"],
            records=[(uuid.uuid4(), p, "sms", number(i), now) for i, p in enumerate(profiles)],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "consent_states", columns=["profile_id", "channel", "purpose", "state", "since"],
            records=[(p, "sms", "marketing", "granted", now) for p in profiles],
        )  # fmt: skip
        await connection.copy_records_to_table(
            "enrolments",
            columns=["id", "sequence", "profile_id", "status", "current_step", "trigger_type",
                     "trigger_properties", "variants", "enrolled_at", "updated_at"],
            records=[(e, SEQUENCE, p, "active", STEP, "enrolled", "{}", "{}", now, now)
                     for e, p in zip(enrolments, profiles, strict=True)],
        )  # fmt: skip
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    return enrolments


async def schedule(dsn: str, enrolments: list[uuid.UUID], start: datetime, rate: float) -> None:
    """One due step per enrolment, the i-th due at start + i / rate."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.copy_records_to_table(
            "sequence_work", columns=["enrolment_id", "step", "due_at", "attempt"],
            records=[(e, STEP, start + timedelta(seconds=i / rate), 1)
                     for i, e in enumerate(enrolments)],
        )  # fmt: skip
        await connection.execute("ANALYZE sequence_work")
    finally:
        await connection.close()


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process (the server's, and one per connection)."""
    return server_cpu("postgres")


def server_cpu(command: str) -> dict[int, float]:
    """CPU seconds of every process of this command name (a server's, and its workers)."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # it ended meanwhile
    return found


def machine_busy() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in clock ticks (/proc/stat)."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and waiting for I/O
    return sum(ticks) - idle, sum(ticks)


def run_queue_seconds(pid: int) -> float:
    """Time a process has spent ready to run but waiting for a free core."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reference_dispatch(
    dsn: str, enrolments: list[uuid.UUID], loops: int, batch: int
) -> tuple[int, float]:
    """One more step due now for each enrolment, claimed and marked done by the bare loop
    with `loops` connections: how many, and how many a second."""
    connection = await asyncpg.connect(dsn)
    try:
        due = datetime.now(UTC) - timedelta(seconds=1)
        await connection.copy_records_to_table(
            "sequence_work", columns=["enrolment_id", "step", "due_at", "attempt"],
            records=[(e, "reference", due, 1) for e in enrolments],
        )  # fmt: skip
        await connection.execute("ANALYZE sequence_work")
    finally:
        await connection.close()
    return await references.claim_and_mark(dsn, loops, batch)


async def _stop(processes: list[asyncio.subprocess.Process]) -> None:
    """Ctrl-C to each, last started first; killed if not gone within 30 s."""
    for process in reversed(processes):
        if process.returncode is None:
            process.send_signal(2)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_for(path: Path, text: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 120
    while text not in (seen := await asyncio.to_thread(path.read_text, errors="replace")):
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{path.name}: no {text!r}:\n{seen[-3000:]}")
        await asyncio.sleep(0.1)


async def bench_sequences(
    rate: float, seconds: float, workers: int = 2, callbacks: bool = True, backlog: bool = False
) -> SequencesMeasured:
    """`rate` times `seconds` steps falling due at `rate` a second, or with `backlog` all
    due at the same moment."""
    count = int(rate * seconds)
    result = SequencesMeasured(
        rate=rate, seconds=seconds, workers=workers, due=count, callbacks=callbacks,
        backlog=backlog,
    )  # fmt: skip
    due_rate = math.inf if backlog else rate
    rasa = RasaEventsStub(secrets.token_hex(8))
    rasa_runner, rasa_port = await rasa.start()
    name = f"parley_bench_seq_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    url = dsn.replace("postgresql://", "postgresql+asyncpg://")
    var = Path(tempfile.mkdtemp(prefix="parley-bench-seq-"))
    processes: list[asyncio.subprocess.Process] = []
    try:
        await migrate(url)
        now = datetime.now(UTC)
        enrolments = await load_people(dsn, count, now)
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
            "PARLEY_VAR_DIR": str(var),
            "PARLEY_DATABASE_URL": url,
            "PARLEY_DATA_DIR": str(data_folder(var / "data", now)),
            "PARLEY_SECRET_KEY": secrets.token_hex(16),
            "PARLEY_TWILIO_AUTH_TOKEN": TOKEN,
            "PARLEY_TWILIO_EMULATOR_PORT": str(port),
            "PARLEY_TWILIO_API_URL": f"http://127.0.0.1:{port}",
            "PARLEY_SMS_SENDS_PER_SECOND": str(SENDS_PER_SECOND),
            # No API replica runs: the emulator's delivery callbacks meet a closed port.
            "PARLEY_BACKEND_PORT": str(free_port()),
            # Follow-ups are recorded in each person's conversation through Rasa's API.
            "PARLEY_RASA_TOKEN": rasa.token,
            "PARLEY_RASA_API_URL": f"http://127.0.0.1:{rasa_port}",
        }
        parley = [sys.executable, "-m", "backend"]
        emulator_log = var / "emulator.log"
        with emulator_log.open("wb") as sink:
            emulator = await asyncio.create_subprocess_exec(
                *parley, "twilio-emulator", *([] if callbacks else ["--no-status-callbacks"]),
                env={**env, "PARLEY_LOG_LEVEL": "error"},
                stdout=sink, stderr=sink, cwd=PROJECT_ROOT,
            )  # fmt: skip
        processes.append(emulator)
        await _wait_for(emulator_log, "Twilio emulator on", emulator)
        logs = [var / f"worker-{n}.log" for n in range(workers)]
        for log in logs:
            with log.open("wb") as sink:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        *parley, "worker", env=env, stdout=sink, stderr=sink, cwd=PROJECT_ROOT
                    )
                )
        for log, process in zip(logs, processes[1:], strict=True):
            await _wait_for(log, "worker.started", process)

        start = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS)
        await schedule(dsn, enrolments, start, due_rate)
        await asyncio.sleep((start - datetime.now(UTC)).total_seconds())
        cpu_before = [cpu_seconds(p.pid) for p in processes]
        postgres_before, own_before = postgres_cpu(), cpu_seconds(os.getpid())
        busy_before = machine_busy()
        waiting_before = [run_queue_seconds(p.pid) for p in processes[1:]]
        clock_before = time.monotonic()
        # Until every step is done, nothing has moved for 30 s, or CUTOFF_SECONDS have
        # passed since the last step fell due (what is left then is counted, not waited for).
        give_up = clock_before + seconds + CUTOFF_SECONDS
        connection = await asyncpg.connect(dsn)
        try:
            last, moved = -1, time.monotonic()
            while time.monotonic() - moved < 30 and time.monotonic() < give_up:
                await asyncio.sleep(0.5)
                left = await connection.fetchval(
                    "SELECT count(*) FROM sequence_work WHERE done_at IS NULL"
                )
                if left == 0:
                    break
                if left != last:
                    last, moved = left, time.monotonic()
            result.outcomes = {
                str(r["outcome"]): int(r["n"])
                for r in await connection.fetch(
                    "SELECT coalesce(outcome, 'not run') AS outcome, count(*) AS n "
                    "FROM sequence_work GROUP BY 1"
                )
            }
            result.unfinished = await connection.fetchval(
                "SELECT count(*) FROM sequence_work WHERE done_at IS NULL"
            )
            recorded_sent = {
                str(r["address"])
                for r in await connection.fetch(
                    "SELECT i.address FROM sequence_work w "
                    "JOIN enrolments e ON e.id = w.enrolment_id "
                    "JOIN identities i ON i.profile_id = e.profile_id "
                    "WHERE w.outcome = 'sent'"
                )
            }
        finally:
            await connection.close()
        elapsed = time.monotonic() - clock_before
        cpu = [
            (cpu_seconds(p.pid) - b) / elapsed for p, b in zip(processes, cpu_before, strict=True)
        ]
        result.emulator_cpu, result.worker_cpu = cpu[0], cpu[1:]
        postgres_after = postgres_cpu()
        result.postgres_cpu = (
            sum(t - postgres_before.get(pid, 0.0) for pid, t in postgres_after.items()) / elapsed
        )
        result.bench_cpu = (cpu_seconds(os.getpid()) - own_before) / elapsed
        busy, total = (now - then for now, then in zip(machine_busy(), busy_before, strict=True))
        result.machine_busy = busy / total if total else 0.0
        result.worker_cpu_seconds = sum(cpu[1:]) * elapsed
        result.worker_waiting = [
            (run_queue_seconds(p.pid) - b) / elapsed
            for p, b in zip(processes[1:], waiting_before, strict=True)
        ]
        result.worker_peak_rss_mb = [peak_rss_mb(p.pid) for p in processes[1:]]

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/emulator/messages") as response,
        ):
            messages = await response.json()
        _measure(result, messages, start, due_rate, recorded_sent)
        texted = {m["to"] for m in messages}
        result.recorded = sum(1 for to in rasa.recorded if to in texted)
        if backlog:
            # The workers stopped, so the reference has the machine Parley had.
            await _stop(processes)
            defaults = Settings.model_fields
            batch = int(defaults["scheduler_batch"].default)
            # As many batches in flight as the workers keep: each its own connection.
            result.reference_loops = workers * int(defaults["scheduler_concurrency"].default)
            result.reference_claimed, result.reference_claims_per_second = await reference_dispatch(
                dsn, enrolments, result.reference_loops, batch
            )
    finally:
        await _stop(processes)
        await rasa_runner.cleanup()
        admin = await asyncpg.connect(POSTGRES)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(var, ignore_errors=True)
    return result


def _measure(
    result: SequencesMeasured,
    messages: list[dict[str, str]],
    start: datetime,
    rate: float,
    recorded_sent: set[str],
) -> None:
    due = {number(i): start + timedelta(seconds=i / rate) for i in range(result.due)}
    received = Counter(m["to"] for m in messages if m["to"] in due)
    result.texted = len(received)
    result.repeated = sum(n - 1 for n in received.values())
    # Steps the scheduler recorded as sent whose text the emulator never got.
    result.lost = len(recorded_sent - set(received))
    first: dict[str, datetime] = {}
    for message in messages:
        to = message["to"]
        if to in due and to not in first:
            first[to] = datetime.fromisoformat(message["created_at"])
    result.lag_ms = [(first[to] - due[to]).total_seconds() * 1000 for to in first]
    created = sorted(first.values())
    if len(created) >= 10:
        # The sending rate in its middle 80 %: neither the start nor the tail.
        low, high = created[len(created) // 10], created[len(created) * 9 // 10]
        span = (high - low).total_seconds()
        inside = sum(1 for c in created if low <= c <= high)
        result.sends_per_second = inside / span if span > 0 else 0.0


def shipped_settings() -> str:
    """The scheduler's settings the workers run with (their defaults), for the report."""
    fields = Settings.model_fields
    names = {"scheduler_batch": ("batch", ""), "scheduler_concurrency": ("concurrency", ""),
             "scheduler_poll_seconds": ("poll", " s"),
             "scheduler_lease_seconds": ("lease", " s")}  # fmt: skip
    return ", ".join(
        f"{label} {fields[name].default:g}{unit}"
        for name, (label, unit) in names.items()
        if name in fields
    )


def sequences_table(results: list[SequencesMeasured], machine_line: str) -> str:
    def row(label: str, cells: list[str], target: str = "") -> str:
        return f"| {label} | " + " | ".join(cells) + f" | {target} |"

    def lag(r: SequencesMeasured, pick: str) -> str:
        if not r.lag_ms or r.backlog:  # there, the lag is how long the backlog took
            return "—"
        value = (
            statistics.median(r.lag_ms)
            if pick == "p50"
            else p99(r.lag_ms)
            if pick == "p99"
            else max(r.lag_ms)
        )
        return f"{value:,.0f} ms"

    columns = [
        (f"{r.due:,} due at once" if r.backlog else f"{r.rate:,.0f} due/s")
        + ("" if r.callbacks else ", no status callbacks")
        for r in results
    ]
    lines = [
        "## Sequences: two scheduler workers dispatching follow-up texts",
        "",
        f"Machine: {machine_line}.",
        "",
        "Load: one step of a marketing sequence falls due for each of N people at a steady "
        f"rate for {results[0].seconds:.0f} s (N = rate × time); two `parley worker` "
        f"processes on PostgreSQL (scheduler settings as shipped: {shipped_settings()}) "
        "dispatch them "
        "through the one door to the local Twilio emulator, a third process, with the "
        "guards on: consent, quiet hours, the frequency caps, the reply and goal exits. "
        "People, consent and enrolments are loaded with COPY before the run. The lag is "
        "from the step's `due_at` to the emulator accepting the text; sends per second "
        "are counted over the middle 80 % of the sending; the lag covers the texts sent "
        f"before measuring stops, {CUTOFF_SECONDS:.0f} s after the last step fell due. "
        "CPU is over the same time. All texts leave one sending "
        f"number, paced at {SENDS_PER_SECOND:,} a second here (the door keeps one pace "
        "per number, `PARLEY_SMS_SENDS_PER_SECOND`; a real long code sends 1 a second). "
        "No API replica runs, so the emulator's delivery callbacks meet a closed port; "
        "in the columns that say so the emulator makes none (`parley twilio-emulator "
        "--no-status-callbacks`), since in a deployment that work is Twilio's, on its own "
        "machines, and here it shares the two cores with the workers. In the last column "
        "the steps are all due at the same moment, so the sends per second are as many as "
        "the workers can send (at a steady 1,000 due a second they can send no more than "
        "1,000), and the lag is the time the backlog took, not shown. "
        "Before a batch is sent, its follow-ups are recorded in the people's conversations "
        "in one request to the bot's batch endpoint; a stub of it answers at once, so the "
        "workers' side of recording is measured and Rasa's own cost of storing them is not "
        "(the next table measures that).",
        "",
        "| Measure | " + " | ".join(columns) + " | Target |",
        "|---|" + "---|" * len(columns) + "---|",
        row("steps due", [f"{r.due:,}" for r in results]),
        row(
            "sends per second (emulator)",
            [f"{r.sends_per_second:,.0f}" for r in results],
            "≥ 1,000",
        ),
        row("lag, due to sent: median", [lag(r, "p50") for r in results]),
        row("lag, due to sent: p99", [lag(r, "p99") for r in results], "≤ 1 s at 1,000 due/s"),
        row("lag, due to sent: max", [lag(r, "max") for r in results]),
        row("texts sent (people texted)", [f"{r.texted:,}" for r in results]),
        row(
            "of them recorded in the person's conversation first",
            [f"{r.recorded:,}" for r in results],
            "all",
        ),
        row(
            "texts lost (recorded as sent, never reached the emulator)",
            [f"{r.lost:,}" for r in results],
            "0",
        ),
        row("texts sent twice", [f"{r.repeated:,}" for r in results], "0"),
        row(
            f"steps not done {CUTOFF_SECONDS:.0f} s after the last fell due",
            [f"{r.unfinished:,}" for r in results],
            "0",
        ),
        row(
            "CPU per worker (share of one core)",
            [", ".join(f"{c:.0%}" for c in r.worker_cpu) for r in results],
        ),
        row(
            "time each worker was ready to run but waited for a core",
            [", ".join(f"{c:.0%}" for c in r.worker_waiting) for r in results],
        ),
        row("CPU of the emulator", [f"{r.emulator_cpu:.0%}" for r in results]),
        row("CPU of PostgreSQL (all its processes)", [f"{r.postgres_cpu:.0%}" for r in results]),
        row(
            "CPU of the benchmark process (the Rasa stub)",
            [f"{r.bench_cpu:.0%}" for r in results],
        ),
        row(
            f"the machine's {os.cpu_count()} cores, share busy",
            [f"{r.machine_busy:.0%}" for r in results],
        ),
        row(
            "worker CPU per text sent",
            [
                f"{r.worker_cpu_seconds / r.texted * 1000:.2f} ms" if r.texted else "—"
                for r in results
            ],
        ),
        row(
            "worker peak memory (RSS)",
            [", ".join(f"{m:.0f} MB" for m in r.worker_peak_rss_mb) for r in results],
        ),
        "",
        "Step outcomes: "
        + "; ".join(
            f"{columns[n]}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(r.outcomes.items()))
            for n, r in enumerate(results)
        )
        + ".",
        *reference_lines(results),
    ]
    return "\n".join(lines)


def reference_lines(results: list[SequencesMeasured]) -> list[str]:
    """The backlog run's sends beside the bare claim-and-mark loop's pace."""
    measured = [r for r in results if r.reference_claimed]
    if not measured:
        return []
    r = measured[-1]
    target = 0.3
    share = r.sends_per_second / r.reference_claims_per_second
    return [
        "",
        "Beside a bare reference, in the same run on the same database: once the "
        f"{r.due:,}-at-once run is over and its workers are stopped, {r.reference_claimed:,} "
        "more due steps of the same kind (one per enrolment, all due at once) are claimed "
        "by a bare loop in plain asyncpg, `SELECT … ORDER BY due_at, id LIMIT "
        f"{Settings.model_fields['scheduler_batch'].default} FOR UPDATE SKIP LOCKED` and "
        "an UPDATE marking them sent in one transaction, on "
        f"{r.reference_loops} connections at once ({r.workers} workers × the batches "
        "each keeps in flight). No guards, no door, no Twilio, no conversation: what "
        "claiming alone costs the database.",
        "",
        "| Measure | Parley (guards, door, Twilio emulator) | Bare claim-and-mark loop "
        "| Parley ÷ reference | Target |",
        "|---|---|---|---|---|",
        f"| steps dispatched per second, {r.due:,} due at once "
        f"| {r.sends_per_second:,.0f} | {r.reference_claims_per_second:,.0f} "
        f"| {references.ratio(r.sends_per_second, r.reference_claims_per_second)} "
        f"| ≥ {target}×: {'met' if share >= target else 'not met'} |",
    ]
