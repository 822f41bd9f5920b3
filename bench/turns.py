"""A Parley turn beside a stock Rasa turn, in the same run on the same machine.

The stock bot is the `rasa init` project (moodbot) of the same Rasa, trained in a
temporary directory and served by `rasa run` with its defaults. Parley is `parley run`
(the embedded default: SQLite, backend, action server, Rasa), model already trained.
Both are driven through Rasa's REST channel by the same load generator
(bench/turn_load.py) in a separate process; stock's messages are moodbot's, Parley's
a greeting and a name (which run custom actions that call the backend), a price
question, a comparison and a goodbye.

Each round starts both servers afresh (stock first on odd rounds, Parley first on even
ones), timing each from its command to its first answered message, then runs the loads
interleaved: sequential conversations (one turn at a time) and 16 concurrent ones, each
twice. Each figure is the median over rounds or runs, with the spread (lowest to highest).
Memory is the peak, during the loads, of the proportional set size (PSS: shared pages
split between the processes sharing them) summed over the server's process tree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backend.core.settings import PROJECT_ROOT
from bench.sms import parley_environment
from tests.servers import free_port

BOT_PYTHON = PROJECT_ROOT / ".venv-bot" / "bin" / "python"
QUIET = {"RASA_TELEMETRY_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "2"}
CONCURRENT = 16
SEQUENTIAL = 8  # conversations one after another: 40 turns
READY_SECONDS = 900.0


@dataclass
class Side:
    """What one bot measured, one value per round or run."""

    name: str
    ready_s: list[float] = field(default_factory=list)
    sequential_p50_ms: list[float] = field(default_factory=list)
    concurrent_per_s: list[float] = field(default_factory=list)
    concurrent_p95_ms: list[float] = field(default_factory=list)
    peak_pss_mb: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass
class TurnsMeasured:
    stock: Side
    parley: Side
    rounds: int


@dataclass
class Server:
    process: asyncio.subprocess.Process
    rest_url: str
    ready_s: float
    log: Path


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), round(fraction * len(ordered) + 0.5)) - 1)]


# ---------------------------------------------------------------- memory of a process tree


def process_tree() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # The command name is in brackets and may hold spaces: the ppid follows it.
            after = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            tree.setdefault(int(after[1]), []).append(int(entry.name))
    return tree


def tree_pss_mb(root: int) -> float:
    """PSS of `root` and all its descendants, in MB."""
    tree, pending, total_kb = process_tree(), [root], 0
    while pending:
        pid = pending.pop()
        pending.extend(tree.get(pid, []))
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


@contextlib.asynccontextmanager
async def peak_memory(root: int, into: list[float]) -> AsyncIterator[None]:
    peak = 0.0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, await asyncio.to_thread(tree_pss_mb, root))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    try:
        yield
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        into.append(peak)


# ---------------------------------------------------------------- the two servers


async def stock_project(directory: Path | None) -> Path:
    """A trained `rasa init` project: `directory` if it holds one, else a new one."""
    if directory is not None and any((directory / "models").glob("*.tar.gz")):
        return directory
    target = directory or Path(tempfile.mkdtemp(prefix="parley-bench-stock-rasa-"))
    target.mkdir(parents=True, exist_ok=True)
    print(f"  training the stock `rasa init` bot in {target}…", flush=True)
    process = await asyncio.create_subprocess_exec(
        str(BOT_PYTHON), "-m", "rasa", "init", "--no-prompt", "--init-dir", str(target),
        env={**os.environ, **QUIET}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=target,
    )  # fmt: skip
    if await process.wait() != 0 or not any((target / "models").glob("*.tar.gz")):
        raise RuntimeError(f"rasa init --no-prompt failed in {target}")
    return target


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def serve(
    command: list[str], env: dict[str, str], cwd: Path, rest_url: str, log: Path
) -> Server:
    """Start `command` and time it until its REST channel answers a message."""
    started = time.perf_counter()
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=cwd, stdout=sink, stderr=sink
        )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"{command[:3]} exited:\n{_tail(log)}")
            if time.perf_counter() - started > READY_SECONDS:
                raise RuntimeError(f"{command[:3]} was not ready:\n{_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                message = {"sender": "bench-ready", "message": "hi"}
                async with http.post(rest_url, json=message) as response:
                    if response.status == 200 and await response.json(content_type=None):
                        break
            await asyncio.sleep(0.1)
    return Server(process, rest_url, time.perf_counter() - started, log)


async def start_stock(project: Path) -> Server:
    port = free_port()
    command = [str(BOT_PYTHON), "-m", "rasa", "run", "--model", "models", "--port", str(port)]
    return await serve(
        command, {**os.environ, **QUIET}, project,
        f"http://127.0.0.1:{port}/webhooks/rest/webhook", project / "bench-rasa-run.log",
    )  # fmt: skip


async def start_parley(env: dict[str, str], ports: dict[str, int], var: Path) -> Server:
    return await serve(
        [sys.executable, "-m", "backend", "run"], env, PROJECT_ROOT,
        f"http://127.0.0.1:{ports['RASA']}/webhooks/rest/webhook", var / "parley-run.log",
    )  # fmt: skip


async def stop(server: Server) -> None:
    if server.process.returncode is None:
        server.process.send_signal(2)
        try:
            await asyncio.wait_for(server.process.wait(), 60)
        except TimeoutError:
            server.process.kill()
            await server.process.wait()


# ---------------------------------------------------------------- the loads


@dataclass
class Load:
    latencies_ms: list[float]
    failed: list[str]
    seconds: float


async def _load(server: Server, script: str, conversations: int, sequential: int, prefix: str
                ) -> Load:  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.turn_load", server.rest_url, script,
        "--conversations", str(conversations), "--sequential", str(sequential),
        "--prefix", prefix, stdout=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed against {server.rest_url}")
    return Load(**json.loads(out))


async def measure_once(side: Side, server: Server, script: str, label: str) -> int:
    """One sequential and one concurrent load into `side`; the messages answered."""
    sequential = await _load(server, script, 1, SEQUENTIAL, f"{label}-seq")
    side.sequential_p50_ms.append(statistics.median(sequential.latencies_ms))
    async with peak_memory(server.process.pid, side.peak_pss_mb):
        concurrent = await _load(server, script, CONCURRENT, 1, f"{label}-conc")
    side.concurrent_per_s.append(len(concurrent.latencies_ms) / concurrent.seconds)
    side.concurrent_p95_ms.append(percentile(concurrent.latencies_ms, 0.95))
    side.failed += sequential.failed + concurrent.failed
    return len(sequential.latencies_ms) + len(concurrent.latencies_ms)


async def bench_turns(rounds: int = 3, runs_per_round: int = 2,
                      stock_dir: Path | None = None) -> TurnsMeasured:  # fmt: skip
    project = await stock_project(stock_dir)
    result = TurnsMeasured(Side("stock Rasa"), Side("Parley"), rounds)
    # One installation restarted each round, as an operator restarts it: migrated once.
    parley = parley_environment("parley-bench-turns-", {})
    starters: list[tuple[Side, Callable[[], object], str]] = [
        (result.stock, lambda: start_stock(project), "stock"),
        (result.parley, lambda: start_parley(*parley), "parley"),
    ]
    try:
        for number in range(rounds):
            order = starters if number % 2 == 0 else starters[::-1]
            servers: list[tuple[Side, Server, str]] = []
            try:
                for side, start, script in order:
                    server: Server = await start()  # type: ignore[misc]
                    side.ready_s.append(server.ready_s)
                    servers.append((side, server, script))
                for run in range(runs_per_round):
                    for side, server, script in servers if run % 2 == 0 else servers[::-1]:
                        await measure_once(side, server, script, f"r{number}-{run}")
            finally:
                for _, server, _ in servers:
                    await stop(server)
            print(f"  round {number + 1}: " + "; ".join(_summary(s) for s in (result.stock, result.parley)),
                  flush=True)  # fmt: skip
    finally:
        if stock_dir is None:
            shutil.rmtree(project, ignore_errors=True)
    return result


def _summary(side: Side) -> str:
    return (
        f"{side.name} p50 {side.sequential_p50_ms[-1]:.0f} ms, "
        f"{side.concurrent_per_s[-1]:.1f} msg/s, p95 {side.concurrent_p95_ms[-1]:.0f} ms, "
        f"{side.peak_pss_mb[-1]:.0f} MB, ready {side.ready_s[-1]:.1f} s"
    )


# ---------------------------------------------------------------- the table


def cell(values: list[float], unit: str, digits: int = 0) -> str:
    """The median, with the spread (lowest to highest)."""
    if not values:
        return "–"
    median = statistics.median(values)
    return f"{median:,.{digits}f} {unit} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


@dataclass(frozen=True)
class Row:
    label: str
    stock: list[float]
    parley: list[float]
    unit: str
    digits: int
    target: str
    met: Callable[[float], bool]

    @property
    def ratio(self) -> float:
        return statistics.median(self.parley) / statistics.median(self.stock)


def turns_table(result: TurnsMeasured, machine_line: str) -> str:
    stock, parley = result.stock, result.parley
    rows = [
        Row("sequential turn, p50", stock.sequential_p50_ms, parley.sequential_p50_ms, "ms", 0,
            "≤ 1.25×", lambda r: r <= 1.25),
        Row(f"{CONCURRENT} concurrent conversations, messages/s", stock.concurrent_per_s,
            parley.concurrent_per_s, "/s", 1, "≥ 2×", lambda r: r >= 2.0),
        Row(f"{CONCURRENT} concurrent conversations, p95", stock.concurrent_p95_ms,
            parley.concurrent_p95_ms, "ms", 0, "≤ 0.5×", lambda r: r <= 0.5),
        Row("memory, peak PSS of the whole process tree", stock.peak_pss_mb, parley.peak_pss_mb,
            "MB", 0, "≤ 1.5×", lambda r: r <= 1.5),
        Row("from the command to the first answer", stock.ready_s, parley.ready_s, "s", 1,
            "≤ 1×", lambda r: r <= 1.0),
    ]  # fmt: skip
    lines = [
        "## A turn: Parley beside stock Rasa",
        "",
        f"Machine: {machine_line}.",
        "",
        f"{__doc__.split(chr(10) + chr(10), 1)[1].strip()}",
        "",
        f"Rounds: {result.rounds}; sequential: {SEQUENTIAL} conversations of 5 turns one after "
        f"another; concurrent: {CONCURRENT} conversations of 5 turns at once.",
        "",
        "| Measure | stock Rasa | Parley | Parley ÷ stock | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {cell(row.stock, row.unit, row.digits)} | "
            f"{cell(row.parley, row.unit, row.digits)} | {row.ratio:.2f}× | {row.target} | "
            f"{'yes' if row.met(row.ratio) else 'no'} |"
        )
    failed = stock.failed + parley.failed
    if failed:
        lines += ["", f"Failed turns: {len(failed)} (first: {failed[0]})."]
    else:
        lines += ["", "Every turn of every run was answered."]
    return "\n".join(lines)
