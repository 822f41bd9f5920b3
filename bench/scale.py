"""The scale profile on this machine: `parley run --profile scale` with one Rasa replica
and with two, driven like the turns benchmark (bench/turns.py: the same load generator,
in a separate process, through the entry point's Rasa port).

Each round starts each stack afresh in turn (one replica first on odd rounds, two on
even ones), on databases of the run's own on the local PostgreSQL (dropped at the end)
and a RabbitMQ queue of its own, and measures it twice. One replica means one Rasa
server, one action server and one backend API process; the two scheduler workers, the
events consumer and the entry point run either way.

Around each measurement (a sequential and a concurrent load) the CPU time of every
process is read (/proc), grouped by kind, PostgreSQL's, Redis's and RabbitMQ's
included: divided by the messages answered, the CPU one message costs each kind of
process, which is what docs/scaling.md sizes a deployment from.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg

from backend.core.settings import PROJECT_ROOT
from bench import turns
from bench.sequences import cpu_seconds, server_cpu
from bench.sms import parley_environment
from bench.turns import (
    CONCURRENT,
    SEQUENTIAL,
    Server,
    Side,
    cell,
    process_tree,
    serve,
    stop,
)
from tests.servers import POSTGRES_DSN, RABBITMQ_URL

REPLICAS = (1, 2)
# Process kinds, by a part of their command line; the first that matches.
KINDS = (
    ("Rasa servers", b"bot.rasa_server"),
    ("action servers", b"bot.action_server"),
    ("backend API processes", b"backend backend"),
    ("events consumer", b"consume-events"),
    ("scheduler workers", b"backend worker"),
    ("Twilio emulator", b"twilio-emulator"),
    ("entry point (parley run)", b"backend run"),
)
# The servers the stack shares with whatever else runs here (nothing, while measuring),
# by their process names.
SERVERS = (("PostgreSQL", "postgres"), ("Redis", "redis-server"), ("RabbitMQ", "beam.smp"))


@dataclass
class Measured(Side):
    # CPU milliseconds one answered message cost each kind of process, one per run.
    cpu_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class ScaleMeasured:
    sides: dict[int, Measured]
    rounds: int


def _kind(pid: int) -> str | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    return next((kind for kind, part in KINDS if part in command), None)


def cpu_by_kind(root: int) -> dict[str, float]:
    """CPU seconds so far of each kind of process under `root`, and the servers'."""
    tree, pending, found = process_tree(), [root], defaultdict[str, float](float)
    while pending:
        pid = pending.pop()
        pending.extend(tree.get(pid, []))
        kind = _kind(pid)
        if kind is not None:
            try:
                found[kind] += cpu_seconds(pid)
            except (OSError, IndexError, ValueError):
                continue  # it ended meanwhile
    for kind, command in SERVERS:
        found[kind] = sum(server_cpu(command).values())
    return found


async def measure_once(side: Measured, server: Server, label: str) -> None:
    """The turns benchmark's loads, and the CPU each kind of process spent on them."""
    before = await asyncio.to_thread(cpu_by_kind, server.process.pid)
    answered = await turns.measure_once(side, server, "parley", label)
    after = await asyncio.to_thread(cpu_by_kind, server.process.pid)
    for kind in after:
        side.cpu_ms[kind].append(1000 * (after[kind] - before.get(kind, 0.0)) / answered)


async def _start(replicas: int, name: str) -> Server:
    base = POSTGRES_DSN.rsplit("/", 1)[0]
    env, ports, var = parley_environment(f"parley-bench-scale-{replicas}-", {})
    env |= {
        "PARLEY_SCALE_REPLICAS": str(replicas),
        "PARLEY_DATABASE_URL": f"{base.replace('postgresql', 'postgresql+asyncpg', 1)}/{name}",
        "PARLEY_RASA_TRACKER_STORE_URL": f"{base}/{name}_rasa",
        "PARLEY_EVENTS_QUEUE": f"parley.bench.{name}",
    }
    log = var / "parley-run.log"
    server = await serve(
        [sys.executable, "-m", "backend", "run", "--profile", "scale"], env, PROJECT_ROOT,
        f"http://127.0.0.1:{ports['RASA']}/webhooks/rest/webhook", log,
    )  # fmt: skip
    # The scheduler workers start once the Rasa replicas answer: their start-up is not
    # the loads' work.
    while "[parley] Parley is up." not in log.read_text(errors="replace"):
        if server.process.returncode is not None:
            raise RuntimeError(f"parley run --profile scale exited:\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.5)
    await asyncio.sleep(5)
    return server


async def _clean_up(name: str) -> None:
    base = POSTGRES_DSN.rsplit("/", 1)[0]
    connection = await asyncpg.connect(f"{base}/postgres")
    try:
        for database in (name, f"{name}_rasa"):
            await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()
    amqp = await aio_pika.connect(RABBITMQ_URL)
    try:
        channel = await amqp.channel()
        queue = f"parley.bench.{name}"
        for each in (queue, f"{queue}.unreadable"):
            await channel.queue_delete(each)
        await channel.exchange_delete(queue)
    finally:
        await amqp.close()


async def bench_scale(rounds: int = 2, runs_per_round: int = 2) -> ScaleMeasured:
    name = f"parley_bench_scale_{secrets.token_hex(3)}"
    result = ScaleMeasured(
        {n: Measured(f"{n} replica{'s' if n > 1 else ''}") for n in REPLICAS}, rounds
    )
    try:
        for number in range(rounds):
            for replicas in REPLICAS if number % 2 == 0 else REPLICAS[::-1]:
                side = result.sides[replicas]
                server = await _start(replicas, name)
                try:
                    side.ready_s.append(server.ready_s)
                    for run in range(runs_per_round):
                        await measure_once(side, server, f"s{replicas}-{number}-{run}")
                finally:
                    await stop(server)
                print(f"  round {number + 1}, {side.name}: "
                      f"{side.concurrent_per_s[-1]:.1f} msg/s, "
                      f"p95 {side.concurrent_p95_ms[-1]:.0f} ms, "
                      f"{side.peak_pss_mb[-1]:.0f} MB", flush=True)  # fmt: skip
    finally:
        await _clean_up(name)
    return result


def scale_table(result: ScaleMeasured, machine_line: str) -> str:
    one, two = result.sides[1], result.sides[2]
    rows = [
        ("sequential turn, p50", one.sequential_p50_ms, two.sequential_p50_ms, "ms", 0),
        (f"{CONCURRENT} concurrent conversations, messages/s", one.concurrent_per_s,
         two.concurrent_per_s, "/s", 1),
        (f"{CONCURRENT} concurrent conversations, p95", one.concurrent_p95_ms,
         two.concurrent_p95_ms, "ms", 0),
        ("memory, peak PSS of the whole process tree", one.peak_pss_mb, two.peak_pss_mb, "MB", 0),
        ("from the command to the first answer", one.ready_s, two.ready_s, "s", 1),
    ]  # fmt: skip
    lines = [
        "## The scale profile: one Rasa replica and two",
        "",
        f"Machine: {machine_line}.",
        "",
        __doc__.split("\n\n", 1)[1].strip(),
        "",
        f"Rounds: {result.rounds}; sequential: {SEQUENTIAL} conversations of 5 turns one after "
        f"another; concurrent: {CONCURRENT} conversations of 5 turns at once.",
        "",
        "| Measure | 1 replica | 2 replicas | 2 ÷ 1 |",
        "|---|---|---|---|",
    ]
    for label, single, double, unit, digits in rows:
        ratio = statistics.median(double) / statistics.median(single) if single and double else 0
        lines.append(
            f"| {label} | {cell(single, unit, digits)} | {cell(double, unit, digits)} | "
            f"{ratio:.2f}× |"
        )
    lines += [
        "",
        "CPU per answered message during the loads, by kind of process (all "
        "replicas of a kind together):",
        "",
        "| Process | 1 replica | 2 replicas |",
        "|---|---|---|",
    ]
    kinds = [kind for kind, _ in KINDS + SERVERS]
    for kind in kinds:
        if one.cpu_ms.get(kind) or two.cpu_ms.get(kind):
            lines.append(
                f"| {kind} | {cell(one.cpu_ms.get(kind, []), 'ms', 1)} | "
                f"{cell(two.cpu_ms.get(kind, []), 'ms', 1)} |"
            )
    totals = [
        [
            sum(side.cpu_ms[k][i] for k in kinds if side.cpu_ms.get(k))
            for i in range(len(side.concurrent_per_s))
        ]
        for side in (one, two)
    ]
    lines.append(f"| all of them | {cell(totals[0], 'ms', 1)} | {cell(totals[1], 'ms', 1)} |")
    failed = one.failed + two.failed
    lines += [
        "",
        f"Failed turns: {len(failed)} (first: {failed[0]})."
        if failed
        else "Every turn of every run was answered.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # a quick look: python -m bench.scale
    measured = asyncio.run(bench_scale(1, 1))
    print(scale_table(measured, "this machine"))
