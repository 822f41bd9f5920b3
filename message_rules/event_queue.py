"""The RabbitMQ queue of Rasa's conversation events (scale profile): its name and the
bounds both sides declare it with, Rasa's broker (bot/bounded_pika.py) and the
backend's consumer (backend/rasa_events/consumer.py). RabbitMQ refuses a declaration
whose arguments differ from the queue's (PRECONDITION_FAILED), so they come from here.

- `x-max-length` (default 100,000 messages), oldest dropped first (`x-overflow:
  drop-head`): while nothing consumes, the newest week of a busy bot is kept, never
  Rasa's memory or the broker's disk;
- `x-message-ttl` (default 168 hours: a week), after which a message not yet consumed
  is discarded (it holds what a person said).
"""

from __future__ import annotations

QUEUE = "parley.conversation-events"
DEFAULT_MAX_LENGTH = 100_000
DEFAULT_TTL_HOURS = 168.0


def queue_bounds(
    max_length: int = DEFAULT_MAX_LENGTH, message_ttl_hours: float = DEFAULT_TTL_HOURS
) -> dict[str, int | str]:
    """The queue's arguments. Raises ValueError for bounds that bound nothing."""
    if max_length < 1 or message_ttl_hours <= 0:
        raise ValueError("the event queue's max_length and message_ttl_hours must be > 0")
    return {
        "x-max-length": int(max_length),
        "x-overflow": "drop-head",
        "x-message-ttl": int(message_ttl_hours * 3600 * 1000),
    }
