"""Fixtures for the consumer of Rasa's conversation events: the real RabbitMQ, with a
queue of each test's own declared as the scale profile's Rasa declares it (bounded,
bound to a fanout exchange), and the consumer on the test's database. Without RabbitMQ
the tests are skipped, or fail with CI=true."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
from pamqp.common import FieldValue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend import data_files
from backend.core.clock import SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import Event, RasaEvent
from backend.core.settings import PROJECT_ROOT, Settings
from backend.events.recording import EventRecorder
from backend.people.profiles import ProfileDirectory
from backend.rasa_events.consumer import RasaEventConsumer, unreadable_queue
from backend.rasa_events.store import RasaEventStore
from message_rules.event_queue import queue_bounds
from tests.servers import RABBITMQ_URL, server_missing

DATA = PROJECT_ROOT / "data"
ERASURE_KEY = b"test-secret-key"  # the `settings` fixture's PARLEY_SECRET_KEY
# Small bounds of the tests' own: the queues are declared with them on both sides.
BOUNDS = queue_bounds(50_000, 1)
# Not a time limit on the behaviour, a guard against hanging: past it the test fails.
PATIENCE = 180.0


@pytest.fixture
async def rabbitmq() -> AsyncIterator[AbstractConnection]:
    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    except Exception as error:
        server_missing(f"RabbitMQ is not reachable at {RABBITMQ_URL}: {error}")
    try:
        yield connection
    finally:
        await connection.close()


@dataclass
class EventQueue:
    """A queue of the test's own, fed as Rasa's pika broker feeds it."""

    channel: AbstractChannel
    exchange: AbstractExchange
    name: str

    async def publish(self, events: Sequence[dict[str, Any]], **headers: str) -> None:
        """As `PikaEventBroker._message` publishes (JSON, persistent, Rasa's headers)."""
        for event in events:
            await self.publish_body(json.dumps(event).encode(), **headers)

    async def publish_body(self, body: bytes, **headers: str) -> None:
        table: dict[str, FieldValue] = dict(headers)
        await self.exchange.publish(
            aio_pika.Message(
                body, headers=table or None, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            ),
            "",
        )

    async def waiting(self, name: str | None = None) -> int:
        """Messages ready in the queue (or another), not handed to a consumer."""
        queue = await self.channel.declare_queue(name or self.name, passive=True)
        assert queue.declaration_result.message_count is not None
        return queue.declaration_result.message_count

    async def set_aside(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """What the consumer set aside as unreadable."""
        queue = await self.channel.declare_queue(
            unreadable_queue(self.name), durable=True, arguments=dict(BOUNDS)
        )
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found


@pytest.fixture
async def event_queue(rabbitmq: AbstractConnection) -> AsyncIterator[EventQueue]:
    name = f"parley-test-events-{uuid.uuid4().hex[:12]}"
    channel = await rabbitmq.channel()
    exchange = await channel.declare_exchange(
        f"{name}-exchange", aio_pika.ExchangeType.FANOUT, auto_delete=True
    )
    queue = await channel.declare_queue(name, durable=True, arguments=dict(BOUNDS))
    await queue.bind(exchange, "")
    yield EventQueue(channel, exchange, name)
    for each in (name, unreadable_queue(name)):
        await channel.queue_delete(each)
    await exchange.delete()
    await channel.close()


def store_for(settings: Settings) -> RasaEventStore:
    clock = SystemClock()
    rules = data_files.load_scoring(DATA)
    directory = ProfileDirectory(clock=clock, rules=rules, erasure_key=ERASURE_KEY)
    recorder = EventRecorder(directory, data_files.load_sequences(DATA))
    return RasaEventStore(recorder, data_files.load_forms(), clock, settings.default_phone_region)


@dataclass
class Consumers:
    """Consumers of the test's queue, run in this process on the test's database."""

    settings: Settings
    queue: EventQueue
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = field(default_factory=list)

    async def start(self, **options: Any) -> RasaEventConsumer:
        consumer = RasaEventConsumer(
            url=RABBITMQ_URL, queue=self.queue.name, bounds=BOUNDS,
            sessions=self.sessions, store=store_for(self.settings),
            **{"first_retry": 0.05, "max_retry": 0.5, **options},
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        self.running.append((stop, task))
        await asyncio.wait_for(consumer.consuming.wait(), PATIENCE)
        return consumer

    async def stop_all(self) -> None:
        for stop, task in self.running:
            stop.set()
            await asyncio.wait_for(task, PATIENCE)
        self.running.clear()

    async def count(self, model: Any, *where: Any) -> int:
        async with self.sessions() as session:
            return int(
                await session.scalar(select(func.count()).select_from(model).where(*where)) or 0
            )

    async def until_read(self, consumer: RasaEventConsumer, messages: int) -> None:
        """Wait until `consumer` has settled this many messages (stored, found held
        already, erased or set aside)."""
        settled = ("stored", "duplicates", "erased", "unreadable")
        deadline = time.monotonic() + PATIENCE
        while sum(consumer.totals[k] for k in settled) < messages:
            assert time.monotonic() < deadline, consumer.totals
            await asyncio.sleep(0.05)

    async def until_waiting(self, messages: int) -> None:
        """Wait until this many messages are ready in the queue."""
        deadline = time.monotonic() + PATIENCE
        while (ready := await self.queue.waiting()) != messages:
            assert time.monotonic() < deadline, f"{ready} ready, not {messages}"
            await asyncio.sleep(0.05)

    async def until_stored(self, rasa_events: int, events: int | None = None) -> None:
        """Wait until the store holds this many Rasa events (and behaviour events)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            held = await self.count(RasaEvent)
            reported = await self.count(Event) if events is not None else None
            if held == rasa_events and reported == events:
                return
            assert held <= rasa_events, f"{held} Rasa events held, {rasa_events} published"
            assert time.monotonic() < deadline, f"{held}/{rasa_events} held, {reported} events"
            await asyncio.sleep(0.05)


@pytest.fixture
async def consumers(settings: Settings, event_queue: EventQueue) -> AsyncIterator[Consumers]:
    engine = create_engine(settings.resolved_database_url)
    running = Consumers(settings, event_queue, engine, create_session_factory(engine))
    try:
        yield running
    finally:
        await running.stop_all()
        await engine.dispose()


StartConsumer = Callable[..., Awaitable[RasaEventConsumer]]
