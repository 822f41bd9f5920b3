"""Rasa's RabbitMQ event broker with bounded queues.

In the scale profile (bot/endpoints.scale.yml) every conversation event Rasa publishes
(what people said, in full) goes to the queue `parley.conversation-events`, which the
backend consumes (`parley consume-events`, backend/rasa_events). Rasa declares queues
without limits, so a queue nobody drains would keep every transcript forever. This
broker declares each queue with RabbitMQ's own bounds (queue arguments, enforced by the
server; message_rules/event_queue.py, which the backend's consumer declares it with too):

- `x-max-length` (`max_length`, default 100,000 messages), oldest dropped first
  (`x-overflow: drop-head`);
- `x-message-ttl` (`message_ttl_hours`, default 168: a week), after which a message
  not yet consumed is discarded.

While RabbitMQ cannot be reached, Rasa keeps the events it could not publish in memory
to publish them on reconnecting; here at most `max_length` of them, the oldest dropped
first, as the queue itself would.

A queue declared before with other arguments cannot be redeclared (RabbitMQ answers
PRECONDITION_FAILED, and Rasa does not start): delete it once (`rabbitmqctl
delete_queue parley.conversation-events`) when its bounds change. docs/privacy.md.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import aio_pika
from rasa.core.brokers.pika import PikaEventBroker

from message_rules.event_queue import DEFAULT_MAX_LENGTH, DEFAULT_TTL_HOURS, queue_bounds


class BoundedPikaEventBroker(PikaEventBroker):
    def __init__(
        self,
        *args: Any,
        max_length: int = DEFAULT_MAX_LENGTH,
        message_ttl_hours: float = DEFAULT_TTL_HOURS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.bounds = queue_bounds(max_length, message_ttl_hours)
        kept: deque[dict[str, Any]] = deque(maxlen=int(max_length))
        self._unpublished_events = kept

    async def published(self) -> None:
        """Wait until RabbitMQ has confirmed every event handed over so far (or its
        publishing failed, and it is kept to be sent on reconnection). The tracker store
        waits for this before a turn is answered (bot/tracker_store.py): an answered
        message's events are in the durable queue, not in this process's memory only."""
        pending = list(self._background_tasks)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _set_up_exchange(
        self, channel: aio_pika.RobustChannel
    ) -> aio_pika.abc.AbstractRobustExchange:
        exchange = await channel.declare_exchange(
            self.exchange_name, type=aio_pika.ExchangeType.FANOUT
        )
        for name in self.queues:
            queue = await channel.declare_queue(name, durable=True, arguments=self.bounds)
            await queue.bind(exchange, "")
        return exchange
