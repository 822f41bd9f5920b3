"""Workers that crash mid-batch: every follow-up still goes out exactly once.

Two `parley worker` processes on PostgreSQL dispatch a send-now marketing text, then a
marketing e-mail, to each of N subscribed people through the doors to the local Twilio
emulator and the local mail sink over SMTP (real clock, short leases, small batches). One of them is killed with SIGKILL again and again, a
moment after it started work (so most likely in the middle of a batch and of a step),
and started again, while work is left; then the other finishes what is left.
A killed worker's leased rows are claimed again once the lease expires; its texts and
e-mails that were recorded or accepted before it died must neither be sent twice nor be
lost."""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.core.database import create_engine, create_session_factory
from backend.core.models import Enrolment, SequenceWork
from backend.devtools.mail_sink import MailSink
from backend.devtools.twilio_emulator import TwilioEmulator
from tests.backend.conftest import _create_postgres_database, _drop_postgres_database, migrate
from tests.backend.ops.test_worker_process import (
    ACCOUNT,
    PATIENCE,
    TOKEN,
    ServerFactory,
    address,
    follow_up_data,
    number,
    start_worker,
    stop,
    subscribe_and_enrol,
    worker_env,
)
from tests.servers import POSTGRES_DSN

pytestmark = pytest.mark.postgres

PEOPLE = 300
LEASE_SECONDS = 2
MAX_KILLS = 10
Sessions = async_sessionmaker[AsyncSession]


async def _unfinished(sessions: Sessions) -> int:
    """Work rows due by now (or within minutes) that nobody has finished."""
    soon = datetime.now(UTC) + timedelta(minutes=5)
    async with sessions() as session:
        unfinished = await session.scalar(
            select(func.count()).where(SequenceWork.done_at.is_(None), SequenceWork.due_at <= soon)
        )
        return int(unfinished or 0)


async def _until_working(
    worker: asyncio.subprocess.Process,
    log: Path,
    sessions: Sessions,
    work_left: Callable[[], Awaitable[bool]],
    after_a_step: bool,
    deadline: datetime,
) -> bool:
    """Wait until `worker` is at work (True): it holds a lease on work, or, with
    `after_a_step`, it has finished a step. False if no work is left for it."""
    while datetime.now(UTC) < deadline:
        seen = await asyncio.to_thread(log.read_text, errors="replace")
        assert worker.returncode is None, f"the worker ended ({worker.returncode}):\n{seen}"
        if after_a_step and "sequence.step" in seen:
            return True
        if not after_a_step and "worker.started" in seen:
            owner = seen.split("worker.started", 1)[1].split("owner=", 1)[1].split()[0]
            async with sessions() as session:
                leased = await session.scalar(
                    select(SequenceWork.id)
                    .where(SequenceWork.lease_owner == owner, SequenceWork.done_at.is_(None))
                    .limit(1)
                )
            if leased is not None:
                return True
        if not await work_left():
            return False
        await asyncio.sleep(0.02)
    raise AssertionError("the workers did not finish in time")


async def test_a_worker_killed_again_and_again_mid_batch_neither_loses_nor_repeats_a_text(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    name = await _create_postgres_database()
    base = POSTGRES_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    database_url = f"{base}/{name}"
    engine = create_engine(database_url)
    survivor: asyncio.subprocess.Process | None = None
    victim: asyncio.subprocess.Process | None = None
    enrolling: asyncio.Task[object] | None = None
    sink = MailSink()
    smtp = await asyncio.get_running_loop().create_server(sink.smtp, "127.0.0.1", 0)
    try:
        data_dir = follow_up_data(tmp_path / "data", email=True)
        await migrate(database_url)
        twilio = TwilioEmulator(ACCOUNT, TOKEN)
        twilio_server = await aiohttp_server(twilio.app())
        env = worker_env(
            tmp_path, database_url, data_dir, str(twilio_server.make_url("")).rstrip("/"),
            PARLEY_SCHEDULER_LEASE_SECONDS=str(LEASE_SECONDS),
            PARLEY_SCHEDULER_BATCH="10",
            PARLEY_SMS_SENDS_PER_SECOND="5000",
            # How long a send may wait for its turn: it bounds how long a recorded send
            # can be in flight, so how soon a crashed one may be checked with Twilio.
            PARLEY_SMS_MAX_WAIT="1",
            # A step whose send is in doubt is tried again after 3 s, 6 s, 12 s…
            PARLEY_SCHEDULER_RETRY_SECONDS="3",
            PARLEY_SMTP_HOST="127.0.0.1", PARLEY_SMTP_PORT=str(smtp.sockets[0].getsockname()[1]),
            PARLEY_SMTP_SECURITY="none", PARLEY_EMAIL_DOMAIN_PER_SECOND="1000",
            # As for texts: an e-mail in the middle of its send for longer than 1 s of
            # waiting and 2 s of SMTP (and 5 s to spare) was left by a killed worker.
            PARLEY_EMAIL_MAX_WAIT="1", PARLEY_SMTP_TIMEOUT_SECONDS="2",
        )  # fmt: skip
        sessions = create_session_factory(engine)
        rng = random.Random(20261126)  # when to kill: the same each run

        # Both workers start, then the people are enrolled (each step due at once).
        log = tmp_path / "victim-0.log"
        victim = await start_worker(env, log)
        survivor = await start_worker(env, tmp_path / "survivor.log")
        numbers = [number(i) for i in range(PEOPLE)]
        enrolling = asyncio.create_task(
            subscribe_and_enrol(database_url, data_dir, numbers, email=True)
        )

        async def work_left() -> bool:
            assert enrolling is not None
            return not enrolling.done() or await _unfinished(sessions) > 0

        kills = 0
        deadline = datetime.now(UTC) + PATIENCE
        # Kill the victim a moment into its work, again and again, while work is left:
        # by turns a moment after it leased its first rows (a fresh worker's first step
        # is slow, so that lands in it) and a moment after it finished a step.
        while kills < MAX_KILLS and await work_left():
            if victim is None:
                log = tmp_path / f"victim-{kills}.log"
                victim = await start_worker(env, log)
            after_a_step = kills % 2 == 1
            if not await _until_working(victim, log, sessions, work_left, after_a_step, deadline):
                break  # the survivor took what was left
            await asyncio.sleep(rng.uniform(0.3, 0.7))  # most likely mid-batch, mid-step
            if victim.returncode is None:
                victim.send_signal(signal.SIGKILL)
            await victim.wait()
            victim = None
            kills += 1
        await enrolling
        # The survivor finishes what is left (a dead worker's leases expire first).
        while await _unfinished(sessions):
            assert datetime.now(UTC) < deadline, "the workers did not finish in time"
            assert survivor.returncode is None, (tmp_path / "survivor.log").read_text()
            await asyncio.sleep(0.2)
        assert await stop(survivor) == 0, (tmp_path / "survivor.log").read_text()
        if victim is not None:
            await stop(victim)

        async with sessions() as session:
            rows = list(await session.scalars(select(SequenceWork)))
            enrolments = Counter(await session.scalars(select(Enrolment.status)))
    finally:
        if enrolling is not None and not enrolling.done():
            enrolling.cancel()
        for process in (survivor, victim):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await engine.dispose()
        await _drop_postgres_database(name)
        smtp.close()

    received = Counter(m.to for m in twilio.messages.values())
    mailed = Counter(to for r in sink.received for to in r.rcpt_tos)
    assert kills >= 1, "the victim was never killed at work"
    addresses = [address(i) for i in range(PEOPLE)]
    found = {
        "texted more than once": {to: n for to, n in received.items() if n > 1},
        "never texted": sorted(set(numbers) - set(received)),
        "e-mailed more than once": {to: n for to, n in mailed.items() if n > 1},
        "never e-mailed": sorted(set(addresses) - set(mailed)),
        "work left unfinished": Counter(
            f"{w.outcome}: {w.outcome_detail}" for w in rows if w.done_at is None
        ),
    }
    assert found == {
        "texted more than once": {}, "never texted": [], "e-mailed more than once": {},
        "never e-mailed": [], "work left unfinished": {},
    }, (
        f"after {kills} kills of one of two workers, {len(twilio.messages)} texts and "
        f"{len(sink.received)} e-mails to {PEOPLE} people"
    )  # fmt: skip
    assert len(twilio.messages) == len(sink.received) == PEOPLE
    assert enrolments == {"completed": PEOPLE}
