"""The SMS benchmark of the channels issue: signed Twilio webhooks at a steady rate into
the SMS webhook ("A message comes in", the backend's /twilio/sms) of a whole `parley run` (local Twilio emulator, backend on SQLite,
action server, Rasa with the trained model). For each text it measures, in the same
run, how long Twilio waits for the webhook's answer (the acknowledgement: the text is
recorded by then) and how long the person waits for the bot's first reply text to reach
the emulator (the full turn). Then the fault run of tests/e2e/test_sms_faults.py, on
PostgreSQL, with every process killed and PostgreSQL crashed three times each: what
became of every text, beside its own acknowledgement latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp
from twilio.request_validator import RequestValidator

from backend.core.settings import PROJECT_ROOT
from bench.backend import p99, peak_rss_mb
from tests.e2e.fault_stack import Outcome, run_faults
from tests.e2e.test_sms_faults import PLAN as FAULT_PLAN
from tests.servers import free_port

TARGETS = {
    "backend": "the backend was killed",
    "actions": "the action server was killed",
    "rasa": "Rasa was killed",
    "postgres": "PostgreSQL crashed and restarted",
}
TOKEN = "bench-twilio-token"  # noqa: S105 (a throwaway token for a loopback run)
BUSINESS = "+15005550006"


@dataclass
class SmsRun:
    """One load of `rate` texts a second for `seconds`, and what became of them."""

    ack_ms: list[float] = field(default_factory=list)
    turn_ms: list[float] = field(default_factory=list)
    unanswered: int = 0
    turns_per_second: float = 0.0
    non_200: int = 0


@dataclass
class SmsMeasured:
    rate: float
    sent: int
    seconds: float
    runs: list[SmsRun] = field(default_factory=list)
    rasa_peak_rss_mb: float = 0.0
    faults: Outcome | None = None

    @property
    def ack_p99s(self) -> list[float]:
        return _per_run([run.ack_ms for run in self.runs], p99)


def _per_run(values: list[list[float]], stat: Callable[[list[float]], float]) -> list[float]:
    """`stat` of each run's values (0 for a run without any)."""
    return [stat(v) if v else 0.0 for v in values]


def parley_environment(
    prefix: str, settings: dict[str, str]
) -> tuple[dict[str, str], dict[str, int], Path]:
    """The environment of a `parley run` of its own (SQLite, its own var dir and free
    ports) with these extra settings: the environment, the ports by name, the var dir."""
    var = Path(tempfile.mkdtemp(prefix=prefix))
    ports = {
        name: free_port()
        for name in (
            "BACKEND",
            "RASA",
            "ACTION_SERVER",
            "TWILIO_EMULATOR",
            "MAIL_SINK_SMTP",
            "MAIL_SINK",
        )
    }
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        **{f"PARLEY_{name}_PORT": str(port) for name, port in ports.items()},
        "PARLEY_LOG_LEVEL": "warning",
        **settings,
    }
    for leaked in (
        "PARLEY_DATABASE_URL",
        "PARLEY_TWILIO_API_URL",
        "PARLEY_PUBLIC_URL",
        "PARLEY_SMTP_HOST",
    ):
        env.pop(leaked, None)
    return env, ports, var


@contextlib.asynccontextmanager
async def running_parley(prefix: str, settings: dict[str, str]) -> AsyncIterator[dict[str, int]]:
    """A whole `parley run` (SQLite, its own var dir and ports) with these extra
    settings, until the block ends; its ports by name."""
    env, ports, var = parley_environment(prefix, settings)
    log = var / "parley-run.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "backend", "run", env=env, stdout=sink, stderr=sink,
            cwd=PROJECT_ROOT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while "[parley] Parley is up." not in log.read_text(errors="replace"):
            if process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"parley run did not come up:\n{log.read_text()[-3000:]}")
            await asyncio.sleep(1)
        yield ports
    finally:
        if process.returncode is None:
            process.send_signal(2)
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()


async def bench_sms(
    rate: float = 50.0, seconds: float = 20.0, faults: bool = True, runs: int = 3
) -> SmsMeasured:
    """`runs` loads one after another into one stack, each once the bot has answered
    the one before: this machine's timing varies from run to run, so one run says
    little about a p99."""
    # One sending number answers every text here: give it a short code's pace.
    settings = {"PARLEY_TWILIO_AUTH_TOKEN": TOKEN, "PARLEY_SMS_SENDS_PER_SECOND": "500"}
    result = SmsMeasured(rate=rate, sent=int(rate * seconds), seconds=seconds)
    async with running_parley("parley-bench-sms-", settings) as ports:
        webhook = f"http://127.0.0.1:{ports['BACKEND']}/twilio/sms"
        emulator = f"http://127.0.0.1:{ports['TWILIO_EMULATOR']}"
        for number in range(runs):
            result.runs.append(await _load(webhook, emulator, rate, seconds, number * 1000))
            print(f"  run {number + 1}: acknowledgement p99 {p99(result.runs[-1].ack_ms):.0f} ms",
                  flush=True)  # fmt: skip
        rasa_pid = _rasa_pid(ports["RASA"])
        result.rasa_peak_rss_mb = peak_rss_mb(rasa_pid) if rasa_pid else 0.0
    if faults:
        var = Path(tempfile.mkdtemp(prefix="parley-bench-faults-"))
        result.faults = await run_faults(var, sys.stdout, FAULT_PLAN)
    return result


def _rasa_pid(port: int) -> int | None:
    """The Rasa server of this run (found by its command line)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bot.rasa_server" in argv and str(port).encode() in argv:
            return int(cmdline.parent.name)
    return None


async def _load(webhook: str, emulator: str, rate: float, seconds: float, first: int) -> SmsRun:
    """Texts from new numbers (`first` and on) at `rate` a second, then wait for every
    first reply."""
    validator = RequestValidator(TOKEN)
    count = int(rate * seconds)
    result = SmsRun()
    sent_at: dict[str, float] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up: one full turn, so the model's first-call costs are not measured.
        await _text(session, validator, webhook, "+14155559999", f"SMwarm{first:028x}")
        await asyncio.sleep(5)

        async def one(index: int) -> None:
            sender = f"+1415555{first + 1000 + index:04d}"
            sid = f"SM{first + index:032x}"
            sent_at[sender] = time.time()
            started = time.perf_counter()
            status = await _text(session, validator, webhook, sender, sid)
            result.ack_ms.append((time.perf_counter() - started) * 1000)
            if status != 200:
                result.non_200 += 1

        start = time.perf_counter()
        tasks = []
        for index in range(count):
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index)))
        await asyncio.gather(*tasks)

        # Drain: wait until every sender has a reply (or nothing new arrives for 60 s).
        first_reply: dict[str, float] = {}
        quiet_since = time.monotonic()
        while len(first_reply) < count and time.monotonic() - quiet_since < 60:
            await asyncio.sleep(1)
            before = len(first_reply)
            async with session.get(f"{emulator}/emulator/messages") as response:
                for message in await response.json():
                    to = message["to"]
                    if to in sent_at and to not in first_reply:
                        first_reply[to] = datetime.fromisoformat(message["created_at"]).timestamp()
            if len(first_reply) > before:
                quiet_since = time.monotonic()
        result.turn_ms = [(first_reply[s] - sent_at[s]) * 1000 for s in first_reply]
        if first_reply:
            span = max(first_reply.values()) - min(sent_at.values())
            result.turns_per_second = len(first_reply) / span if span > 0 else 0.0
        result.unanswered = count - len(first_reply)
    return result


async def _text(
    session: aiohttp.ClientSession, validator: RequestValidator, url: str, sender: str, sid: str
) -> int:
    form = {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC" + "0" * 32, "From": sender,
            "To": BUSINESS, "Body": "hi", "NumMedia": "0"}  # fmt: skip
    headers = {"X-Twilio-Signature": validator.compute_signature(url, form)}
    async with session.post(url, data=form, headers=headers) as response:
        await response.read()
        return response.status


def sms_table(result: SmsMeasured, machine_line: str) -> str:
    runs = result.runs

    def row(measure: str, values: list[float], unit: str, target: str = "", digits: int = 0) -> str:
        cells = " | ".join(f"{v:,.{digits}f}{unit}" for v in values)
        middle = statistics.median(values) if values else 0.0
        return f"| {measure} | {cells} | {middle:,.{digits}f}{unit} | {target} |"

    header = " | ".join(f"run {n}" for n in range(1, len(runs) + 1))
    return "\n".join(
        [
            "## SMS channel: acknowledgement and full turn",
            "",
            f"Machine: {machine_line}.",
            "",
            f"Load: {result.sent:,} signed Twilio webhooks (`hi` from {result.sent:,} different "
            f"numbers, so each is a new conversation) at {result.rate:.0f} per second for "
            f'{result.seconds:.0f} s into the SMS webhook ("A message comes in": the '
            "backend's `/twilio/sms`) of one `parley run` (SQLite, one Rasa process, the local "
            f"Twilio emulator), {len(runs)} times one after another in the same stack, each "
            "once the bot had answered the one before. The acknowledgement is the webhook's "
            "answer to Twilio; the full turn is from the webhook's arrival to the bot's first "
            "reply reaching the emulator through the backend's one door. Both are the same "
            "texts in the same run. The target is judged on the median of the runs' p99s: "
            "this machine's timing varies from run to run.",
            "",
            f"| Measure | {header} | median of runs | Target |",
            "|---|" + "---|" * len(runs) + "---|---|",
            row("acknowledgement, median", _per_run([r.ack_ms for r in runs], statistics.median),
                " ms"),
            row("acknowledgement, p99", result.ack_p99s, " ms", "≤ 50 ms at 50 requests/s"),
            row("full turn (first reply text), median",
                _per_run([r.turn_ms for r in runs], statistics.median), " ms"),
            row("full turn, p99", _per_run([r.turn_ms for r in runs], p99), " ms"),
            row("turns answered per second (first text to last reply)",
                [r.turns_per_second for r in runs], "", digits=1),
            row("webhooks not answered 200", [float(r.non_200) for r in runs], "", "0"),
            row("texts with no reply within a minute of the last one",
                [float(r.unanswered) for r in runs], "", "0"),
            "",
            f"Rasa's peak memory (RSS) over the runs: {result.rasa_peak_rss_mb:,.0f} MB.",
            "",
            f"The bot answers about {statistics.median(r.turns_per_second for r in runs):.0f} "
            f"new conversations a second on this machine, fewer than the {result.rate:.0f} a "
            "second arriving, so texts queue (at most `PARLEY_SMS_CONCURRENT_TURNS` are "
            "answered at once) and the full turn is mostly that wait. " + _ack_sentence(result),
            *(_faults_lines(result.faults) if result.faults else []),
        ]
    )  # fmt: skip


def _ack_sentence(result: SmsMeasured) -> str:
    p99s = result.ack_p99s
    if p99s and statistics.median(p99s) <= 50:
        return (
            "Twilio does not wait for the bot: the acknowledgement is given once the backend "
            "has recorded the text (one insert, whose turn for SQLite's connection comes "
            "before the bot's transactions), and the bot's turn comes after."
        )
    return (
        "The acknowledgement missed its target: it is given once the backend has recorded "
        "the text, and that record shares the backend's event loop, its CPU and its one "
        "SQLite connection with the bot's turns (the action server's calls, the replies and "
        "Twilio's status callbacks for them)."
    )


def _faults_lines(found: Outcome) -> list[str]:
    kills = Counter(f.target for f in found.faults)
    return [
        "",
        "### Through crashes and restarts",
        "",
        f"{found.sent:,} texts from 24 people at about 3 a second (a conversation each, half "
        "ending in STOP) into a stack on PostgreSQL (tests/e2e/test_sms_faults.py, the same "
        "run), while "
        + ", ".join(f"{TARGETS[t]} {n} times" for t, n in kills.items())
        + ", one after another. Counted once every text's answer was given.",
        "",
        "| What became of the texts | Count | Must be |",
        "|---|---|---|",
        f"| acknowledged to Twilio (of them by the fallback URL, Rasa's SMS webhook) | "
        f"{found.acknowledged:,} ({found.by_fallback:,}) | |",
        f"| not acknowledged (backend or PostgreSQL down: Twilio knows) | "
        f"{found.not_acknowledged:,} | |",
        f"| acknowledged but not recorded | {found.acknowledged_not_recorded} | 0 |",
        f"| answers given up or still pending | "
        f"{found.answers_failed + found.answers_pending} | 0 |",
        f"| texts for the bot in their conversation exactly once | "
        f"{found.in_conversation_once:,} of {found.for_the_bot:,} | all |",
        f"| missing from their conversation / in it twice | "
        f"{found.missing_from_conversation} / {found.in_conversation_twice} | 0 / 0 |",
        f"| STOP texts applied, confirmed once | {found.stops_applied} and "
        f"{found.stop_confirmations} of {found.stops} | all |",
        f"| texts Parley sent without a record of them / the same reply twice | "
        f"{found.sent_without_record} / {found.sent_twice} | 0 / 0 |",
        f"| acknowledgement p99 during the faults (texts the backend's webhook took) | "
        f"{found.ack_p99_ms:.0f} ms | |",
    ]
