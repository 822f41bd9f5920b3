"""What conversations tell the backend: the intents people express and the forms they
complete, read from Rasa's event stream and posted to the backend's events API, where
they can start follow-up sequences (`trigger: {intent: …}`, `{form_completed: …}`).

`BackendEventBroker` is a Rasa event broker (bot/endpoints.yml, the embedded default:
`event_broker: type: bot.conversation_events.BackendEventBroker`). Rasa publishes every
event it adds to a conversation; `ConversationReader` (message_rules/rasa_events.py,
shared with the backend's consumer of the scale profile's RabbitMQ queue) turns them into
`intent_expressed` and `form_completed` events naming the person by their channel
identity exactly as the actions do (bot/identity.py), each with an idempotency key made
from the conversation and the Rasa event, so a repeat (a retry, `rasa export`, the
same event consumed from RabbitMQ by the backend) is stored once.

Publishing never waits and never raises: Rasa calls `publish` while it saves the
conversation, so events go into a bounded queue that a background task posts in batches,
retrying with back-off while the backend is unreachable; nothing is lost to an error in
an action or in this module, and a backend down for long drops the oldest events (logged)
rather than Rasa's memory. Rasa takes one event broker: `forward_to:` (another broker's
settings, e.g. bot.bounded_pika.BoundedPikaEventBroker) receives every event too. The
scale profile (bot/endpoints.scale.yml) uses the bounded RabbitMQ broker alone, and the
backend reads the same meaning out of the queue (`parley consume-events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path
from typing import Any

import yaml
from rasa.core.brokers.broker import EventBroker
from rasa.utils.endpoints import EndpointConfig

from bot.backend_client import (
    BackendClient,
    BackendRejected,
    BackendUnavailable,
    IdentifiedEvent,
)
from bot.settings import PROJECT_ROOT, settings
from message_rules.rasa_events import BehaviourEvent, ConversationReader, UnplacedForm

__all__ = ["BackendEventBroker", "ConversationReader", "form_names"]

log = logging.getLogger("parley.conversation_events")

DOMAIN_DIR = PROJECT_ROOT / "bot" / "domain"

BATCH = 100  # events per request (the API takes up to 1,000)
MAX_PENDING = 10_000  # events kept while the backend is unreachable
FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0
CLOSE_SECONDS = 5.0  # to deliver what is pending when Rasa stops


def form_names(domain_dir: Path) -> frozenset[str]:
    """The forms declared in the bot's domain files (`forms:` in bot/domain/*.yml)."""
    names: set[str] = set()
    for path in sorted(domain_dir.glob("*.yml")):
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            log.warning("conversation_events.domain_unreadable file=%s error=%s", path, error)
            continue
        if isinstance(content, dict) and isinstance(content.get("forms"), dict):
            names |= {str(name) for name in content["forms"]}
    return frozenset(names)


def identified(event: BehaviourEvent) -> IdentifiedEvent:
    """The backend client's event for what the conversation told."""
    return IdentifiedEvent(
        type=event.type,
        kind=event.kind,
        address=event.address,
        properties=dict(event.properties),
        occurred_at=event.occurred_at,
        idempotency_key=event.idempotency_key,
    )


class BackendEventBroker(EventBroker):
    """Rasa's event broker for Parley: reports intents and completed forms to the backend
    in the background, and passes every event on to `forward_to` when configured."""

    def __init__(
        self,
        client: BackendClient,
        reader: ConversationReader,
        forward_to: EventBroker | None = None,
        max_pending: int = MAX_PENDING,
        first_retry: float = FIRST_RETRY_SECONDS,
        max_retry: float = MAX_RETRY_SECONDS,
    ) -> None:
        self.client = client
        self.reader = reader
        self.forward_to = forward_to
        self.max_pending = max_pending
        self.first_retry = first_retry
        self.max_retry = max_retry
        self.delivered = 0  # events the backend took (new or duplicate)
        self.dropped = 0  # events given up on (refused, or the queue overflowed)
        self._pending: deque[IdentifiedEvent] = deque()
        self._singly = 0  # after a refused batch: send this many one at a time
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    @classmethod
    async def from_endpoint_config(
        cls,
        broker_config: EndpointConfig | None,
        event_loop: asyncio.AbstractEventLoop | None = None,
    ) -> BackendEventBroker:
        """From bot/endpoints*.yml: optional `forward_to:` (another broker's settings) and
        `domain:` (where the forms are declared; default bot/domain). The backend's URL
        and token are the bot's settings (PARLEY_BACKEND_URL, PARLEY_BACKEND_TOKEN)."""
        options = dict(broker_config.kwargs) if broker_config is not None else {}
        forward: EventBroker | None = None
        if options.get("forward_to"):
            inner = options["forward_to"]
            if not isinstance(inner, dict):
                raise ValueError("event_broker.forward_to: give another event broker's settings")
            forward = await EventBroker.create(EndpointConfig.from_dict(dict(inner)), event_loop)
        domain = Path(options.get("domain") or DOMAIN_DIR)
        forms = form_names(domain if domain.is_absolute() else PROJECT_ROOT / domain)
        if not forms:
            log.warning("conversation_events.no_forms domain=%s", domain)
        config = settings()
        token = config.backend_token.get_secret_value() if config.backend_token else None
        if token is None:
            log.warning("conversation_events.no_token: PARLEY_BACKEND_TOKEN is not set")
        client = BackendClient(config.backend_url, token, config.backend_timeout)
        log.info(
            "conversation_events.ready backend=%s forms=%s forward_to=%s",
            config.backend_url, ",".join(sorted(forms)), type(forward).__name__ if forward else "-",
        )  # fmt: skip
        return cls(client, ConversationReader(forms), forward)

    # ------------------------------------------------------------------ Rasa's side

    def publish(self, event: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        """Called by Rasa, synchronously, for every new conversation event: never raises
        and never waits."""
        if self.forward_to is not None:
            try:
                if headers:
                    self.forward_to.publish(event, headers)
                else:
                    self.forward_to.publish(event)
            except Exception:
                log.exception("conversation_events.forward_failed")
        try:
            found = self.reader.read(event)
            if isinstance(found, UnplacedForm):
                log.warning(
                    "conversation_events.channel_unknown conversation=%s form=%s",
                    found.conversation, found.form,
                )  # fmt: skip
            elif found is not None:
                self._enqueue(identified(found))
        except Exception:
            log.exception("conversation_events.read_failed")

    def is_ready(self) -> bool:
        return bool(self.forward_to.is_ready()) if self.forward_to is not None else True

    async def close(self) -> None:
        """Deliver what is pending (for up to CLOSE_SECONDS; one try if the backend is
        down), then close the client and the forwarded-to broker."""
        self._closing.set()
        self._wake.set()
        if self._sender is not None and not self._sender.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), CLOSE_SECONDS)
            except asyncio.TimeoutError:
                self._sender.cancel()
        if self._pending:
            log.warning("conversation_events.dropped_on_close events=%d", len(self._pending))
            self.dropped += len(self._pending)
            self._pending.clear()
        await self.client.close()
        if self.forward_to is not None:
            await self.forward_to.close()

    async def drained(self) -> None:
        """Wait until everything published so far was delivered or given up on."""
        await self._idle.wait()

    # ------------------------------------------------------------------ the sender

    def _enqueue(self, event: IdentifiedEvent) -> None:
        self._pending.append(event)
        self._trim()
        self._idle.clear()
        self._wake.set()
        if self._sender is None or self._sender.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # not inside Rasa's loop: sent with the next event published in it
            self._sender = loop.create_task(self._send(), name="parley-conversation-events")

    def _trim(self) -> None:
        over = len(self._pending) - self.max_pending
        if over > 0:
            for _ in range(over):
                self._pending.popleft()
            self.dropped += over
            log.warning(
                "conversation_events.queue_full dropped=%d total_dropped=%d", over, self.dropped
            )

    async def _send(self) -> None:
        delay = self.first_retry
        while True:
            if not self._pending:
                self._idle.set()
                if self._closing.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            size = 1 if self._singly else BATCH
            batch = [self._pending.popleft() for _ in range(min(size, len(self._pending)))]
            try:
                await self.client.record_events(batch)
            except BackendUnavailable as error:
                self._pending.extendleft(reversed(batch))
                self._trim()
                if self._closing.is_set():
                    return
                log.warning(
                    "conversation_events.backend_unavailable pending=%d retry_in=%.0fs error=%s",
                    len(self._pending), delay, error,
                )  # fmt: skip
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(delay * 2, self.max_retry)
                continue
            except BackendRejected as error:
                if len(batch) > 1:
                    # One bad event refuses the whole batch: find it by sending singly.
                    self._pending.extendleft(reversed(batch))
                    self._singly = len(batch)
                    continue
                log.warning(
                    "conversation_events.refused type=%s status=%d problem=%s",
                    batch[0].type, error.status, error.problem.get("detail"),
                )  # fmt: skip
                self.dropped += 1
            except Exception:
                log.exception("conversation_events.send_failed events=%d", len(batch))
                self.dropped += len(batch)
            else:
                self.delivered += len(batch)
            self._singly = max(0, self._singly - len(batch))
            delay = self.first_retry
