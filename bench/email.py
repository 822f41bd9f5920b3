"""E-mails a second from a follow-up sequence through the e-mail door, and the lag from
each step falling due to its e-mail being sent, beside a bare aiosmtplib loop to the
same local mail sink in the same run (target: at least half the loop's pace).

Each round enrols N people (e-mail marketing confirmed, in a time zone where it is day)
in a one-step sequence that e-mails them at once, and runs the backend's own scheduler
(`Worker.run`, its shipped batch and concurrency) until every step is done: each batch
decided in one transaction (consent, quiet hours, the frequency cap, the template with
its CSS inlined), then the door's `send_many` (suppression, consent and the guards again,
the messages recorded, each receiving domain's pace, the e-mails built with their footer
and unsubscribe headers, SMTP on up to 16 connections, the outcomes stored), then the
steps' outcomes. The loop only hands the same number of ready-made e-mails to the sink
over SMTP from 16 senders at once, a connection for each. One `parley mail-sink`
process; recipients over
`DOMAINS` receiving domains; PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import aiosmtplib
import asyncpg
from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.api.app import create_app
from backend.api.keys import CLOCK, DIRECTORY, SEQUENCES, SESSIONS, WORKER
from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, Entry, Purpose, Source
from backend.core import audit, logs
from backend.core.clock import SystemClock
from backend.core.identities import IdentityKind
from backend.core.models import Message, SequenceWork
from backend.core.settings import PROJECT_ROOT, Settings
from backend.sequences.enrolment import EntryRefused, TriggerEvent, enrol
from bench import loading
from bench.backend import POSTGRES
from tests.servers import free_port

CONCURRENCY = 16
Sessions = async_sessionmaker[AsyncSession]
DOMAINS = 50
ROUNDS = 3
TARGET = 0.5


@dataclass
class EmailMeasured:
    emails: int = 0
    door_per_second: list[float] = field(default_factory=list)
    loop_per_second: list[float] = field(default_factory=list)
    lag_p50_ms: list[float] = field(default_factory=list)
    lag_p95_ms: list[float] = field(default_factory=list)


def daytime_zone() -> str:
    """A time zone where it is day now: the guards let marketing go."""
    now = datetime.now(UTC)
    for name in ("Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo",
                 "Asia/Kolkata", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Dubai"):  # fmt: skip
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 19:
            return name
    return "UTC"  # pragma: no cover


async def bench_email(emails: int) -> EmailMeasured:
    result = EmailMeasured(emails=emails)
    smtp_port, http_port = free_port(), free_port()
    env = {**os.environ, "PARLEY_MAIL_SINK_SMTP_PORT": str(smtp_port),
           "PARLEY_MAIL_SINK_PORT": str(http_port), "PARLEY_LOG_LEVEL": "warning"}  # fmt: skip
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend", "mail-sink", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    sink_url = f"http://127.0.0.1:{http_port}/sink/emails"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(sink_url) as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            for round_ in range(ROUNDS):
                print(f"  round {round_ + 1}: the door…", flush=True)
                rate, p50, p95 = await _door_round(emails, smtp_port)
                result.door_per_second.append(rate)
                result.lag_p50_ms.append(p50)
                result.lag_p95_ms.append(p95)
                await http.delete(sink_url)
                print(f"  round {round_ + 1}: the bare loop…", flush=True)
                result.loop_per_second.append(await _loop_round(emails, smtp_port))
                await http.delete(sink_url)
    finally:
        sink.terminate()
        await sink.wait()
    return result


SEQUENCE = """
trigger: api
entry: {consent: email}
steps:
  - id: news
    send:
      channel: email
      subject: "Spring news for {{ profile.first_name or 'you' }}"
      template: |
        <style>h1 { color: #2554c7; } p { line-height: 1.5; }</style>
        <h1>Our spring release is out</h1>
        <p>Hi {{ profile.first_name or "there" }}, see what is new.</p>
        <p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""


async def _door_round(emails: int, smtp_port: int) -> tuple[float, float, float]:
    """E-mails a second through the scheduler and the door; the lag from due to sent,
    p50 and p95 (ms)."""
    name = f"parley_bench_email_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    folder = Path(tempfile.mkdtemp(prefix="parley-bench-email-"))
    try:
        await loading.migrate(url)
        data = folder / "data"
        shutil.copytree(PROJECT_ROOT / "data", data, ignore=shutil.ignore_patterns("sequences"))
        (data / "sequences").mkdir()
        (data / "sequences" / "spring-news.yml").write_text(SEQUENCE)
        settings = Settings(
            _env_file=None, database_url=url, data_dir=data, var_dir=folder / "var",
            secret_key=SecretStr("bench-secret"), smtp_host="127.0.0.1", smtp_port=smtp_port,
            smtp_security="none", email_domain_per_second=1000.0, scheduler_enabled=False,
            public_url="https://parley.example", log_level="warning",
        )  # fmt: skip
        logs.configure(settings.log_level)  # as `parley worker` runs with PARLEY_LOG_LEVEL
        clock = SystemClock()
        app = create_app(settings, clock)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            sessions = app[SESSIONS]
            await _enrol(app, sessions, emails)
            worker = app[WORKER]
            stop = asyncio.Event()
            async with sessions.begin() as session:  # every step due from now on
                await session.execute(update(SequenceWork).values(due_at=clock.now()))
            started = time.perf_counter()
            running = asyncio.create_task(worker.run(stop))
            while await _left(sessions):  # noqa: ASYNC110 (polling the database)
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
            stop.set()
            await running
            lags = await _lags(sessions, emails)
        finally:
            await runner.cleanup()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(folder, ignore_errors=True)
    return emails / elapsed, _percentile(lags, 0.5), _percentile(lags, 0.95)


async def _enrol(app: web.Application, sessions: Sessions, emails: int) -> None:
    """N people with e-mail marketing confirmed, each enrolled (a step due now)."""
    clock, directory = app[CLOCK], app[DIRECTORY]
    [sequence] = app[SEQUENCES]
    zone = daytime_zone()
    for start in range(0, emails, 500):
        async with sessions.begin() as session:
            for n in range(start, min(start + 500, emails)):
                found = await directory.identify(
                    session, kind=IdentityKind.EMAIL, address=f"person{n}@domain{n % DOMAINS}.example",
                    fields={"timezone": zone, "first_name": f"Person{n}"},
                )  # fmt: skip
                for confirm in (False, True):
                    await consent.record(
                        session, found.profile.id,
                        Entry(Channel.EMAIL, Purpose.MARKETING, Action.GRANT, Source.IMPORT,
                              confirm=confirm),
                        clock, audit.SystemActor("bench"),
                    )  # fmt: skip
                refused = await enrol(
                    session, sequence, found.profile, TriggerEvent("enrolled"), clock,
                    directory.rules,
                )  # fmt: skip
                assert not isinstance(refused, EntryRefused), refused


async def _left(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(
            await session.scalar(select(func.count()).where(SequenceWork.done_at.is_(None))) or 0
        )


async def _lags(sessions: Sessions, emails: int) -> list[float]:
    """For each e-mail, from its step falling due to the server taking it (ms)."""
    async with sessions() as session:
        rows = (
            await session.execute(
                select(SequenceWork.due_at, Message.updated_at, Message.status)
                .join(Message, Message.enrolment_id == SequenceWork.enrolment_id)
                .where(SequenceWork.step == "news")
            )
        ).all()
    assert len(rows) == emails and all(status == "sent" for _, _, status in rows), (
        f"{len(rows)} e-mails for {emails} people: {Counter(s for _, _, s in rows)}"
    )
    return [(sent - due).total_seconds() * 1000 for due, sent, _ in rows]


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[round(share * (len(ordered) - 1))]


async def _loop_round(emails: int, smtp_port: int) -> float:
    """The same number of ready-made e-mails, one SMTP connection per e-mail as the door
    opens them, from `CONCURRENCY` senders at once."""
    message = EmailMessage()
    message["From"], message["Subject"] = "Brightdesk <hello@brightdesk.example>", "Spring news"
    message.set_content("Our spring release is out.\n\nSee what is new.")
    message.add_alternative("<p>Our spring release is out.</p>", subtype="html")
    raw = message.as_bytes()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(emails):
        queue.put_nowait(n)

    async def sender() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            await aiosmtplib.send(
                raw, sender="hello@brightdesk.example",
                recipients=[f"person{n}@domain{n % DOMAINS}.example"],
                hostname="127.0.0.1", port=smtp_port, use_tls=False, start_tls=False,
            )  # fmt: skip

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return emails / (time.perf_counter() - started)


def email_table(result: EmailMeasured, machine_line: str) -> str:
    door, loop = (
        statistics.median(result.door_per_second),
        statistics.median(result.loop_per_second),
    )
    ratio = door / loop

    def spread(values: list[float]) -> str:
        return f"{min(values):,.0f}–{max(values):,.0f}"

    return f"""## E-mail: a sequence's e-mails through the door beside a bare SMTP loop

{machine_line}

{result.emails:,} marketing e-mails to as many people (consent granted and confirmed,
in a time zone where it is day), recipients over {DOMAINS} receiving domains, to one
`parley mail-sink` process over SMTP on loopback; PostgreSQL. Through Parley: a
one-step sequence that e-mails each person at once, run by the backend's scheduler with
its shipped batch (100) and batches in flight (8): each batch decided in one transaction
(consent, quiet hours, the frequency cap, the subject and HTML rendered with the CSS
inlined), then the e-mail door's `send_many` (suppression, consent and the guards again,
the messages recorded, each domain's pace, the e-mails built with their footer,
`List-Unsubscribe` and one-click, SMTP on up to 16 connections with the `sending` mark,
the outcomes stored), then the steps' outcomes; the door keeps its connections from one
e-mail to the next. The loop: the same number of ready-made e-mails through
`aiosmtplib.send` (a connection for each), {CONCURRENCY} senders at once. Medians of
{ROUNDS} rounds, the spread beside them.

| Measure | Through Parley | Bare aiosmtplib loop | Parley ÷ loop | Target |
|---|---|---|---|---|
| e-mails per second | {door:,.0f} ({spread(result.door_per_second)}) | {loop:,.0f} ({spread(result.loop_per_second)}) | {ratio:.2f}× | ≥ {TARGET}×: {"met" if ratio >= TARGET else "not met"} |
| lag from the step falling due to the server taking the e-mail, p50 | {statistics.median(result.lag_p50_ms):,.0f} ms ({spread(result.lag_p50_ms)}) | | | |
| the same, p95 | {statistics.median(result.lag_p95_ms):,.0f} ms ({spread(result.lag_p95_ms)}) | | | |
"""
