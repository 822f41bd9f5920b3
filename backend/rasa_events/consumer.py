"""The consumer of Rasa's conversation events in RabbitMQ (`parley consume-events`).

It reads the queue bot/endpoints.scale.yml publishes to, declared with the same bounds
(message_rules/event_queue.py: RabbitMQ refuses a declaration with other arguments),
and hands what it reads to `RasaEventStore`, a batch per transaction:

- **Acknowledged after the commit.** A message is acknowledged only once the
  transaction that stored it has committed, so a consumer killed at any moment leaves
  RabbitMQ to deliver again whatever it had not acknowledged, and the store, keyed by
  each event's content, holds it once.
- **Bounded, in order.** RabbitMQ hands over at most `prefetch` unacknowledged messages;
  batches are stored one after the other, in the order they came, which is the order
  each conversation's events were published in. Run one consumer per queue: two would
  share a conversation's events and could store them out of order. A batch waits up to
  `linger` (50 ms) for more messages after its first: a turn publishes its events one
  by one, and a transaction each cost the consumer most of its CPU.
- **The database down** (unreachable, restarting, not migrated yet: `database_unavailable`).
  The batch is tried again, the pause doubling from 1 s to a minute; nothing is
  acknowledged meanwhile, so RabbitMQ keeps the messages (and delivers them again
  should this process stop, or should RabbitMQ tire of waiting and close the channel).
- **Unreadable messages.** One that is not a Rasa event (not JSON, no sender, event or
  timestamp), or that the database refuses by itself (a batch refused for another
  reason than being unreachable is tried one message at a time to find it), is logged,
  set aside in the queue `<queue>.unreadable` (same bounds, for an operator to look
  at) and acknowledged: it never holds up the others, nor stops the process.
- **RabbitMQ away.** Unreachable, or the connection lost: it connects again with the
  same back-off, and RabbitMQ delivers again what was not acknowledged.
- **Stopping** (`stop`: SIGTERM, SIGINT): no new deliveries; the batch in hand is
  finished (or, the database being down, left unacknowledged), the connection closed.

A log line never carries an event's content nor the password in `url`: the database's
errors are logged without their statement and its parameters, the password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aiormq.abc import FieldTable
from aiormq.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed
from sqlalchemy import exc as sql_errors
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from yarl import URL

from backend.core.database import database_unavailable
from backend.core.logs import get_logger
from backend.rasa_events.store import NotAnEvent, PublishedEvent, RasaEventStore, read_message

log = get_logger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 10.0
BATCH_LINGER_SECONDS = 0.05
# RabbitMQ connection trouble, as aio-pika and asyncio raise it.
AMQP_TROUBLE = (OSError, TimeoutError, AMQPError, ChannelInvalidStateError)


def unreadable_queue(queue: str) -> str:
    """Where messages that are not Rasa events are set aside."""
    return f"{queue}.unreadable"


class _Stopping(Exception):
    """Stopping was asked for while a batch waited for the database."""


class _RabbitMQLost(Exception):
    """The channel or the connection closed under the consumer."""


_STOP = "stop"
_CLOSED = "closed"
Delivery = AbstractIncomingMessage | str


@dataclass
class RasaEventConsumer:
    url: str  # amqp://user:password@host:port/vhost, never logged
    queue: str
    bounds: Mapping[str, int | str]  # message_rules.event_queue.queue_bounds
    sessions: async_sessionmaker[AsyncSession]
    store: RasaEventStore
    prefetch: int = 200
    batch: int = 100
    linger: float = BATCH_LINGER_SECONDS
    first_retry: float = FIRST_RETRY_SECONDS
    max_retry: float = MAX_RETRY_SECONDS
    # What it did so far, for its last log line (and tests).
    totals: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("stored", "duplicates", "erased", "reported", "unreadable"), 0
        )
    )
    # Set while it consumes.
    consuming: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        """Where RabbitMQ is, as a log line may show it."""
        url = URL(self.url)
        return str(url.with_password(None) if url.password is not None else url)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set."""
        delay = self.first_retry
        while not stop.is_set():
            try:
                connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_SECONDS)
            except AMQP_TROUBLE as error:
                log.warning(
                    "rasa_events.rabbitmq_unreachable", address=self.address,
                    retry_in=delay, error=self._described(error),
                )  # fmt: skip
                await _pause(stop, delay)
                delay = min(delay * 2, self.max_retry)
                continue
            try:
                async with connection:
                    await self._consume(connection, stop)
                delay = self.first_retry
            except ChannelPreconditionFailed as error:
                log.error(
                    "rasa_events.queue_declared_otherwise", queue=self.queue,
                    bounds=self.bounds, error=self._described(error),
                    fix=f"delete the queue once: rabbitmqctl delete_queue {self.queue}",
                )  # fmt: skip
                await _pause(stop, delay)
                delay = min(delay * 2, self.max_retry)
            except (_RabbitMQLost, *AMQP_TROUBLE) as error:
                if self.consuming.is_set():
                    delay = self.first_retry  # it was consuming: a new loss, not the same
                log.warning(
                    "rasa_events.rabbitmq_lost", address=self.address, retry_in=delay,
                    error=self._described(error),
                )  # fmt: skip
                await _pause(stop, delay)
                delay = min(delay * 2, self.max_retry)
            finally:
                self.consuming.clear()
        log.info("rasa_events.stopped", queue=self.queue, **self.totals)

    async def _consume(self, connection: AbstractConnection, stop: asyncio.Event) -> None:
        channel = await connection.channel()  # with publisher confirms: the set-asides
        await channel.set_qos(prefetch_count=self.prefetch)
        bounds: FieldTable = dict(self.bounds)
        queue = await channel.declare_queue(self.queue, durable=True, arguments=bounds)
        await channel.declare_queue(unreadable_queue(self.queue), durable=True, arguments=bounds)
        inbox: asyncio.Queue[Delivery] = asyncio.Queue()

        def closed(*_: Any) -> None:
            inbox.put_nowait(_CLOSED)

        async def delivered(message: AbstractIncomingMessage) -> None:
            inbox.put_nowait(message)

        async def stopping() -> None:
            await stop.wait()
            inbox.put_nowait(_STOP)

        connection.close_callbacks.add(closed)
        channel.close_callbacks.add(closed)
        waker = asyncio.create_task(stopping(), name="rasa-events-stop")
        tag = await queue.consume(delivered)
        log.info(
            "rasa_events.consuming", address=self.address, queue=self.queue,
            prefetch=self.prefetch, batch=self.batch,
        )  # fmt: skip
        self.consuming.set()
        try:
            while not stop.is_set():
                batch, end = await _next_batch(inbox, self.batch, self.linger)
                if batch:
                    await self._settle(channel, batch, stop)
                if end == _CLOSED:
                    raise _RabbitMQLost("the channel to RabbitMQ closed")
                if end == _STOP:
                    break
            with contextlib.suppress(*AMQP_TROUBLE):
                await queue.cancel(tag)  # what is unacknowledged goes back as the channel closes
        except _Stopping:
            log.warning("rasa_events.stopped_waiting_for_the_database", left_in_queue=True)
        finally:
            waker.cancel()

    async def _settle(
        self, channel: AbstractChannel, messages: Sequence[AbstractIncomingMessage],
        stop: asyncio.Event,
    ) -> None:  # fmt: skip
        """Store a batch and acknowledge it, once committed; set aside what is
        unreadable. Raises _Stopping (nothing acknowledged but the set-asides)."""
        readable: list[tuple[AbstractIncomingMessage, PublishedEvent]] = []
        for message in messages:
            try:
                readable.append((message, read_message(message.body)))
            except NotAnEvent as error:
                await self._set_aside(channel, message, str(error))
        for message, reason in await self._write(channel, readable, stop):
            await self._set_aside(channel, message, reason)
        waiting = [m for m in messages if not m.processed]
        if waiting:
            # Every earlier delivery on this channel is settled: one frame acknowledges all.
            await waiting[-1].ack(multiple=True)

    async def _write(
        self, channel: AbstractChannel,
        items: Sequence[tuple[AbstractIncomingMessage, PublishedEvent]], stop: asyncio.Event,
    ) -> list[tuple[AbstractIncomingMessage, str]]:  # fmt: skip
        """Store `items` in one transaction, trying again while the database cannot be
        reached; the messages it refuses by themselves, with why."""
        if not items:
            return []
        delay, raced = self.first_retry, False
        while True:
            try:
                async with self.sessions.begin() as session:
                    recorded = await self.store.record(session, [event for _, event in items])
            except Exception as error:
                if database_unavailable(error):
                    if stop.is_set():
                        raise _Stopping() from error
                    if channel.is_closed:
                        # RabbitMQ gave up waiting for the acknowledgement (consumer
                        # timeout): it delivers these again to the next channel.
                        raise _RabbitMQLost("the channel closed: the database is down") from error
                    log.warning(
                        "rasa_events.database_unavailable", waiting=len(items), retry_in=delay,
                        error=self._described(error),
                    )  # fmt: skip
                    await _pause(stop, delay)
                    delay = min(delay * 2, self.max_retry)
                    continue
                if isinstance(error, sql_errors.IntegrityError) and not raced:
                    raced = True  # someone stored one of these first: held now, so skipped
                    continue
                if len(items) > 1:
                    refused: list[tuple[AbstractIncomingMessage, str]] = []
                    for item in items:
                        refused += await self._write(channel, [item], stop)
                    return refused
                log.error("rasa_events.refused", error=self._described(error))
                return [(items[0][0], f"refused: {self._described(error)}")]
            for name in ("stored", "duplicates", "erased", "reported"):
                self.totals[name] += getattr(recorded, name)
            log.debug(
                "rasa_events.recorded", stored=recorded.stored, duplicates=recorded.duplicates,
                erased=recorded.erased, reported=recorded.reported,
            )  # fmt: skip
            return []

    async def _set_aside(
        self, channel: AbstractChannel, message: AbstractIncomingMessage, reason: str
    ) -> None:
        """Copy a message that is not a Rasa event to the unreadable queue (confirmed by
        RabbitMQ), then acknowledge it."""
        await channel.default_exchange.publish(
            aio_pika.Message(
                message.body,
                headers={**(message.headers or {}), "x-parley-unreadable": reason[:500]},
                content_type=message.content_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=unreadable_queue(self.queue),
        )
        await message.ack()
        self.totals["unreadable"] += 1
        log.warning(
            "rasa_events.unreadable", reason=reason[:200], bytes=len(message.body),
            set_aside_in=unreadable_queue(self.queue),
        )  # fmt: skip

    def _described(self, error: BaseException) -> str:
        """The error for a log line: the database's own words, without the statement
        and its parameters (a transcript's text), and the password masked."""
        if isinstance(error, sql_errors.StatementError) and error.orig is not None:
            error = error.orig
        text = f"{type(error).__name__}: {error}"[:500]
        password = URL(self.url).password
        if password:
            for shown in {password, quote(password, safe="")}:
                text = text.replace(shown, "******")
        return text


async def _next_batch(
    inbox: asyncio.Queue[Delivery], size: int, linger: float
) -> tuple[list[Any], str | None]:
    """The next messages delivered: waiting for the first, then for up to `size` in all,
    until `linger` seconds after the first; and whether the channel closed or stopping
    was asked for (which ends the batch at once)."""
    batch: list[AbstractIncomingMessage] = []
    item = await inbox.get()
    deadline = asyncio.get_running_loop().time() + linger
    while True:
        if isinstance(item, str):
            return batch, item
        batch.append(item)
        if len(batch) >= size:
            return batch, None
        if inbox.empty():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return batch, None
            try:
                # A get cancelled by the timeout takes nothing from the queue.
                item = await asyncio.wait_for(inbox.get(), left)
            except TimeoutError:
                return batch, None
        else:
            item = inbox.get_nowait()


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
