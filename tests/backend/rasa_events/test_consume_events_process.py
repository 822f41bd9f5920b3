"""`parley consume-events`: the consumer of Rasa's events in a process of its own, run
as an operator runs it, killed without warning in the middle of a burst and started
again, stopped with SIGTERM, and never showing RabbitMQ's password."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from backend.core.database import create_engine, create_session_factory
from backend.core.models import Event, RasaEvent
from backend.core.settings import PROJECT_ROOT
from tests.backend.conftest import migrate
from tests.backend.rasa_events.conftest import BOUNDS, PATIENCE, EventQueue
from tests.backend.rasa_events.rasa import Conversation
from tests.servers import RABBITMQ_URL, free_port

PARLEY = [sys.executable, "-m", "backend"]
CONVERSATIONS = 160  # each a lead form started and finished: 18 events, 3 behaviour events


def consumer_env(tmp_path: Path, database_url: str, queue: str, **extra: str) -> dict[str, str]:
    """What an operator sets for the process (nothing leaks in from this shell)."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")},
        "PARLEY_VAR_DIR": str(tmp_path / "var"),
        "PARLEY_DATABASE_URL": database_url,
        "PARLEY_SECRET_KEY": "test-secret-key",
        "PARLEY_RABBITMQ_URL": RABBITMQ_URL,
        "PARLEY_EVENTS_QUEUE": queue,
        "PARLEY_EVENTS_QUEUE_MAX_LENGTH": str(BOUNDS["x-max-length"]),
        "PARLEY_EVENTS_QUEUE_TTL_HOURS": str(int(BOUNDS["x-message-ttl"]) / 3_600_000),
        **extra,
    }


async def start(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as sink:
        return await asyncio.create_subprocess_exec(
            *PARLEY, "consume-events", env=env, stdout=sink, stderr=sink, cwd=PROJECT_ROOT
        )


async def wait_for_log(
    process: asyncio.subprocess.Process, log: Path, text: str, times: int = 1
) -> str:
    deadline = time.monotonic() + PATIENCE
    while (seen := await asyncio.to_thread(log.read_text, errors="replace")).count(text) < times:
        assert process.returncode is None, f"the consumer ended ({process.returncode}):\n{seen}"
        assert time.monotonic() < deadline, f"no {text!r} in the consumer's log:\n{seen}"
        await asyncio.sleep(0.05)
    return seen


async def stopped(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), PATIENCE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise


async def counts(database_url: str) -> tuple[int, int, int]:
    """Rasa events held, of them distinct keys, and behaviour events recorded."""
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session:
            held = await session.scalar(select(func.count()).select_from(RasaEvent))
            keys = await session.scalar(
                select(func.count(func.distinct(RasaEvent.idempotency_key)))
            )
            events = await session.scalar(select(func.count()).select_from(Event))
            return int(held or 0), int(keys or 0), int(events or 0)
    finally:
        await engine.dispose()


def burst() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """Many conversations' turns interleaved as several Rasa replicas publish them."""
    people = [Conversation(f"+1415{3_000_000 + n:07d}") for n in range(CONVERSATIONS)]
    by_person: dict[str, list[dict[str, Any]]] = {p.sender: [] for p in people}
    published: list[dict[str, Any]] = []
    for turn in ("lead_form_started", "lead_form_finished"):
        for person in people:
            events = getattr(person, turn)()
            by_person[person.sender] += events
            published += events
    return published, by_person


async def test_a_consumer_killed_mid_burst_and_started_again_holds_every_event_once(
    tmp_path: Path, database_url: str, event_queue: EventQueue
) -> None:
    published, by_person = burst()
    env = consumer_env(tmp_path, database_url, event_queue.name)
    log = tmp_path / "consumer.log"
    consumer = await start(env, log)
    publishing: asyncio.Task[None] | None = None
    try:
        await wait_for_log(consumer, log, "rasa_events.consuming")
        publishing = asyncio.create_task(event_queue.publish(published))
        deadline = time.monotonic() + PATIENCE
        while (held := (await counts(database_url))[0]) < len(published) // 5:
            assert time.monotonic() < deadline, f"only {held} held:\n{log.read_text()}"
            await asyncio.sleep(0.01)
        consumer.kill()  # SIGKILL: no clean-up, whatever it was doing
        await consumer.wait()
        killed_at = (await counts(database_url))[0]
        assert killed_at < len(published), "the burst was over before the kill"

        consumer = await start(env, log)
        await wait_for_log(consumer, log, "rasa_events.consuming", times=2)
        await publishing
        # Some of it again, as `rasa export` publishes a conversation again.
        await event_queue.publish(published[:500], **{"rasa-export-process-id": "x"})
        deadline = time.monotonic() + PATIENCE
        while await counts(database_url) != (len(published), len(published), 3 * CONVERSATIONS):
            assert time.monotonic() < deadline, f"{await counts(database_url)}\n{log.read_text()}"
            await asyncio.sleep(0.1)
        while await event_queue.waiting():  # the republished copies, acknowledged as held
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
    finally:
        if publishing is not None and not publishing.done():
            publishing.cancel()
        code = await stopped(consumer)
    output = log.read_text()
    assert code == 0, output
    assert output.count("rasa_events.started") == 2
    assert "rasa_events.stopped" in output.split("rasa_events.started")[-1]
    # Nothing more arrived after everything was acknowledged, and the order held.
    assert await counts(database_url) == (len(published), len(published), 3 * CONVERSATIONS)
    engine = create_engine(database_url)
    try:
        async with create_session_factory(engine)() as session:
            for sender in list(by_person)[:: CONVERSATIONS // 8]:
                held_events = await session.scalars(
                    select(RasaEvent.data).where(RasaEvent.sender_id == sender)
                    .order_by(RasaEvent.timestamp, RasaEvent.id)
                )  # fmt: skip
                assert list(held_events) == sorted(by_person[sender], key=lambda e: e["timestamp"])
            completed = await session.scalar(
                select(func.count()).where(Event.type == "form_completed")
            )
            assert completed == CONVERSATIONS
    finally:
        await engine.dispose()


async def test_the_password_never_reaches_the_log_and_sigterm_stops_it_while_it_waits(
    tmp_path: Path, event_queue: EventQueue
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"
    await migrate(database)
    secret = f"pw-{uuid.uuid4().hex}"
    for name, settings in {
        "refused": {"PARLEY_RABBITMQ_USER": "guest", "PARLEY_RABBITMQ_PASSWORD": secret,
                    "PARLEY_RABBITMQ_HOST": "127.0.0.1"},
        "unreachable": {"PARLEY_RABBITMQ_URL": f"amqp://parley:{secret}@127.0.0.1:{free_port()}/"},
    }.items():  # fmt: skip
        env = consumer_env(tmp_path, database, event_queue.name)
        if "PARLEY_RABBITMQ_URL" not in settings:
            del env["PARLEY_RABBITMQ_URL"]
        log = tmp_path / f"{name}.log"
        consumer = await start({**env, **settings}, log)
        try:
            seen = await wait_for_log(consumer, log, "rasa_events.rabbitmq_unreachable")
        finally:
            code = await stopped(consumer)
        output = log.read_text()
        assert code == 0, output
        assert secret not in output and secret not in seen, output
        assert "rasa_events.stopped" in output, output
