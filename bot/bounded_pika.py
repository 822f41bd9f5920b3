"""Rasa's RabbitMQ event broker with bounded queues.

Every conversation event Rasa publishes (what people said, in full) is copied to the
queues named in bot/endpoints.scale.yml. Rasa declares them without limits, so a queue
nobody drains would keep every transcript forever. This broker declares each queue with
RabbitMQ's own bounds (queue arguments, enforced by the server):

- `x-max-length` (`max_length`, default 100,000 messages), oldest dropped first
  (`x-overflow: drop-head`);
- `x-message-ttl` (`message_ttl_hours`, default 168: a week), after which a message
  not yet consumed is discarded.

A queue declared before with other arguments cannot be redeclared (RabbitMQ answers
PRECONDITION_FAILED, and Rasa does not start): delete it once (`rabbitmqctl
delete_queue parley.conversation-events`) when its bounds change. docs/privacy.md.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from rasa.core.brokers.pika import PikaEventBroker

DEFAULT_MAX_LENGTH = 100_000
DEFAULT_TTL_HOURS = 168


def queue_bounds(max_length: int, message_ttl_hours: float) -> dict[str, Any]:
    if max_length < 1 or message_ttl_hours <= 0:
        raise ValueError("event_broker.forward_to: max_length and message_ttl_hours must be > 0")
    return {
        "x-max-length": int(max_length),
        "x-overflow": "drop-head",
        "x-message-ttl": int(message_ttl_hours * 3600 * 1000),
    }


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
