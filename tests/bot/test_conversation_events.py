"""The event broker that tells the backend what people say and which forms they finish
(bot/conversation_events.py): Rasa's own tracker store publishes real conversation
events through it, and the real backend, started with a pricing sequence of its own,
enrols the people."""

from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web
from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import InMemoryTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActiveLoop,
    BotUttered,
    Event,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig, read_endpoint_config

from bot.backend_client import BackendClient
from bot.conversation_events import BackendEventBroker, ConversationReader, form_names
from bot.settings import PROJECT_ROOT
from message_rules.event_queue import QUEUE, queue_bounds
from tests.bot.conftest import RunningBackend, running_backend
from tests.servers import RABBITMQ_URL, free_port, server_missing

FORMS = form_names(PROJECT_ROOT / "bot" / "domain")
PRICING_SEQUENCE = """
trigger: {intent: ask_price}
steps:
  - id: prices
    send:
      channel: sms
      purpose: transactional
      template: "Our plans start at $19 a seat: brightdesk.example/pricing"
"""
RABBITMQ = RABBITMQ_URL


# ----------------------------------------------------------------------- the backend


@pytest.fixture(scope="module")
def backend_with_pricing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBackend]:
    """The real backend, as the `backend` fixture starts it, with the project's data and
    a sequence that starts when someone asks about prices (the project's re-engagement
    starts on a completed lead form)."""
    data = tmp_path_factory.mktemp("pricing") / "data"
    shutil.copytree(PROJECT_ROOT / "data", data)
    (data / "sequences" / "pricing-follow-up.yml").write_text(PRICING_SEQUENCE)
    with running_backend(
        data.parent / "var",
        "broker tests",
        PARLEY_DATA_DIR=str(data),
        # The follow-ups themselves are the backend's tests; here only who is enrolled.
        PARLEY_SCHEDULER_ENABLED="false",
    ) as running:
        yield running


def call(backend: RunningBackend, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        backend.url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {backend.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def profile_of(backend: RunningBackend, kind: str, address: str) -> str:
    status, data = call(backend, "POST", "/api/v1/identify", {"channel": kind, "address": address})
    assert status in (200, 201), data
    return str(data["profile"]["id"])


def events_of(backend: RunningBackend, profile_id: str) -> list[tuple[str, dict[str, Any]]]:
    status, data = call(backend, "GET", f"/api/v1/profiles/{profile_id}/events")
    assert status == 200, data
    return [(e["type"], e["properties"]) for e in reversed(data["items"])]


def is_enrolled(backend: RunningBackend, sequence: str, profile_id: str) -> bool:
    """Whether the person is in the sequence: enrolling them again is refused as
    `already-enrolled` (if they were not, this enrols them)."""
    status, data = call(
        backend, "POST", f"/api/v1/sequences/{sequence}/enrolments", {"profile_id": profile_id}
    )
    assert status in (201, 409), data
    return status == 409 and str(data["type"]).endswith("already-enrolled")


def subscribe(backend: RunningBackend, profile_id: str) -> None:
    """SMS marketing consent (re-engagement asks for it), confirmed by a YES."""
    for action in ("grant", "confirm"):
        status, data = call(
            backend, "POST", f"/api/v1/profiles/{profile_id}/consent",
            {"channel": "sms", "purpose": "marketing", "action": action,
             "source": "sms_keyword", "reply": "YES"},
        )  # fmt: skip
        assert status == 201, data


def a_number() -> str:
    return f"+1415555{uuid.uuid4().int % 10000:04d}"


# -------------------------------------------------------------- conversations in Rasa


def said(text: str, intent: str, channel: str = "sms", **extra: Any) -> list[Event]:
    return [
        ActionExecuted("action_listen"),
        UserUttered(
            text, intent={"name": intent, "confidence": 0.97, **extra}, input_channel=channel
        ),
    ]


def lead_form_started() -> list[Event]:
    return [
        *said("we might be interested", "interested"),
        ActionExecuted("utter_start_lead"),
        BotUttered("Great, a few questions."),
        ActionExecuted("lead_form"),
        ActiveLoop("lead_form"),
        SlotSet("requested_slot", "first_name"),
        BotUttered("What's your first name?"),
    ]


def lead_form_finished() -> list[Event]:
    """The last answer: the form validates it and, every question answered, ends itself."""
    return [
        *said("in the next month", "inform"),
        ActionExecuted("lead_form"),
        SlotSet("timeline", "this month"),
        ActiveLoop(None),
        SlotSet("requested_slot", None),
        ActionExecuted("action_submit_lead"),
        SlotSet("lead_saved", "saved"),
        ActionExecuted("utter_lead_saved"),
    ]


def lead_form_stopped() -> list[Event]:
    return [
        *said("stop", "stop"),
        ActionExecuted("action_deactivate_loop"),
        ActiveLoop(None),
        SlotSet("requested_slot", None),
        ActionExecuted("utter_lead_stopped"),
    ]


class Conversations:
    """Rasa's in-memory tracker store with the broker: each turn is saved as Rasa saves
    it, and the store publishes the turn's new events."""

    def __init__(self, broker: EventBroker) -> None:
        self.store = InMemoryTrackerStore(Domain.empty(), event_broker=broker)

    async def turn(self, sender: str, events: list[Event]) -> None:
        tracker = await self.store.retrieve(sender) or DialogueStateTracker(sender, [])
        for event in events:
            tracker.update(event)
        await self.store.save(tracker)


def broker_for(backend: RunningBackend, **options: Any) -> BackendEventBroker:
    client = BackendClient(backend.url, backend.token, timeout=5)
    return BackendEventBroker(client, ConversationReader(FORMS), **options)


@pytest.fixture
async def broker(backend_with_pricing: RunningBackend) -> AsyncIterator[BackendEventBroker]:
    broker = broker_for(backend_with_pricing)
    yield broker
    await broker.close()


# -------------------------------------------------------------------------- behaviour


async def test_someone_who_asks_about_prices_is_enrolled_in_the_pricing_sequence(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    asker, greeter = a_number(), a_number()
    conversations = Conversations(broker)
    await conversations.turn(asker, [*said("hi", "greet"), ActionExecuted("utter_greet")])
    await conversations.turn(asker, [*said("how much is it?", "ask_price")])
    await conversations.turn(greeter, [*said("hello", "greet")])
    await broker.drained()

    person = profile_of(backend_with_pricing, "sms", asker)
    assert events_of(backend_with_pricing, person) == [
        ("intent_expressed", {"intent": "greet", "channel": "sms", "conversation": asker}),
        ("intent_expressed", {"intent": "ask_price", "channel": "sms", "conversation": asker}),
    ]
    assert is_enrolled(backend_with_pricing, "pricing-follow-up", person)
    assert not is_enrolled(
        backend_with_pricing, "pricing-follow-up", profile_of(backend_with_pricing, "sms", greeter)
    )


async def test_a_completed_lead_form_enrols_into_re_engagement_and_a_stopped_one_does_not(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    finisher, quitter = a_number(), a_number()
    for number in (finisher, quitter):
        subscribe(backend_with_pricing, profile_of(backend_with_pricing, "sms", number))
    conversations = Conversations(broker)
    await conversations.turn(finisher, lead_form_started())
    await conversations.turn(finisher, lead_form_finished())
    await conversations.turn(quitter, lead_form_started())
    await conversations.turn(quitter, lead_form_stopped())
    await broker.drained()

    finished = profile_of(backend_with_pricing, "sms", finisher)
    stopped = profile_of(backend_with_pricing, "sms", quitter)
    assert ("form_completed", {"form": "lead_form"}) in events_of(backend_with_pricing, finished)
    assert [t for t, _ in events_of(backend_with_pricing, stopped)] == ["intent_expressed"] * 2
    assert is_enrolled(backend_with_pricing, "re-engagement", finished)
    assert not is_enrolled(backend_with_pricing, "re-engagement", stopped)


async def test_the_web_chat_person_is_their_chat_session_as_for_the_actions(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    session = f"web-{uuid.uuid4()}"
    await Conversations(broker).turn(session, said("what does it cost", "ask_price", "webchat"))
    await broker.drained()
    person = profile_of(backend_with_pricing, "web", session)
    assert events_of(backend_with_pricing, person) == [
        ("intent_expressed", {"intent": "ask_price", "channel": "webchat", "conversation": session})
    ]


async def test_a_faq_is_reported_by_its_full_name(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    number = a_number()
    question = said("is there a free trial?", "faq", full_retrieval_intent_name="faq/free_trial")
    await Conversations(broker).turn(number, question)
    await broker.drained()
    person = profile_of(backend_with_pricing, "sms", number)
    assert events_of(backend_with_pricing, person) == [
        ("intent_expressed", {"intent": "faq/free_trial", "channel": "sms", "conversation": number})
    ]


async def test_events_published_twice_are_stored_once(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    # As `rasa export` would publish a conversation's events again.
    number = a_number()
    published = [
        {"sender_id": number, **event.as_dict()}
        for event in [*lead_form_started(), *lead_form_finished()]
    ]
    for event in [*published, *published]:
        broker.publish(event)
    await broker.drained()
    person = profile_of(backend_with_pricing, "sms", number)
    assert [t for t, _ in events_of(backend_with_pricing, person)] == [
        "intent_expressed",
        "intent_expressed",
        "form_completed",
    ]


async def test_intents_triggered_from_outside_and_forms_of_unknown_people_are_not_reported(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    triggered, appended = a_number(), a_number()
    conversations = Conversations(broker)
    await conversations.turn(triggered, [UserUttered.create_external("ask_price", None, "sms")])
    # A form ended by events appended through Rasa's API, with no message from the person
    # seen by this Rasa server: whose conversation it is cannot be told.
    await conversations.turn(
        appended,
        [ActionExecuted("lead_form"), ActiveLoop("lead_form"), ActionExecuted("lead_form"),
         ActiveLoop(None)],
    )  # fmt: skip
    await broker.drained()
    assert broker.delivered == 0
    for number in (triggered, appended):
        person = profile_of(backend_with_pricing, "sms", number)
        assert events_of(backend_with_pricing, person) == []


async def test_an_event_the_backend_refuses_does_not_hold_up_the_others(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    too_long, number = "w" * 400, a_number()  # a web session id the backend cannot store
    for sender, channel in ((too_long, "webchat"), (number, "sms")):
        for event in said("how much?", "ask_price", channel):
            broker.publish({"sender_id": sender, **event.as_dict()})
    await broker.drained()
    assert (broker.delivered, broker.dropped) == (1, 1)
    assert events_of(backend_with_pricing, profile_of(backend_with_pricing, "sms", number)) == [
        ("intent_expressed", {"intent": "ask_price", "channel": "sms", "conversation": number})
    ]


# ------------------------------------------------------------- never in the bot's way


class FlakyBackend:
    """An events API that answers 503 to the first `failures` requests, or holds every
    request until `release` is set."""

    def __init__(self, failures: int = 0, hold: bool = False) -> None:
        self.failures = failures
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.arrived = asyncio.Event()
        self.received: list[dict[str, Any]] = []
        self.requests = 0

    async def events(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrived.set()
        await self.release.wait()
        if self.requests <= self.failures:
            return web.json_response({"title": "down"}, status=503)
        body = await request.json()
        self.received += body["events"]
        return web.json_response(
            {"stored": len(body["events"]), "duplicates": 0, "results": []}, status=201
        )


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(fake: FlakyBackend) -> str:
        app = web.Application()
        app.router.add_post("/api/v1/events", fake.events)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_saving_a_conversation_does_not_wait_for_the_backend(serve: Any) -> None:
    fake = FlakyBackend(hold=True)
    broker = BackendEventBroker(
        BackendClient(await serve(fake), "token", timeout=30), ConversationReader(FORMS)
    )
    conversations = Conversations(broker)
    # The backend answers nothing until the turn is saved: a save that waited for it
    # would never finish.
    await asyncio.wait_for(conversations.turn("+14155550100", said("price?", "ask_price")), 10)
    await fake.arrived.wait()
    assert fake.received == []
    fake.release.set()
    await broker.drained()
    assert [e["properties"] for e in fake.received] == [
        {"intent": "ask_price", "channel": "sms", "conversation": "+14155550100"}
    ]
    await broker.close()


async def test_events_wait_while_the_backend_is_down_and_arrive_once_it_is_back(
    serve: Any,
) -> None:
    fake = FlakyBackend(failures=2)
    client = BackendClient(await serve(fake), "token", timeout=5)
    broker = BackendEventBroker(client, ConversationReader(FORMS), first_retry=0.01)
    conversations = Conversations(broker)
    await conversations.turn("+14155550101", lead_form_started())
    await conversations.turn("+14155550101", lead_form_finished())
    await broker.drained()
    assert fake.requests >= 3  # two refused, then delivered
    assert [e["type"] for e in fake.received] == [
        "intent_expressed",
        "intent_expressed",
        "form_completed",
    ]
    assert fake.received[0]["identity"] == {"kind": "sms", "address": "+14155550101"}
    await broker.close()


async def test_a_backend_that_is_not_there_never_reaches_the_bot() -> None:
    client = BackendClient(f"http://127.0.0.1:{free_port()}", "token", timeout=1)
    broker = BackendEventBroker(client, ConversationReader(FORMS), max_pending=2)
    conversations = Conversations(broker)
    for number in range(4):
        await conversations.turn(f"+1415555020{number}", said("price?", "ask_price"))
    # Garbage is skipped, not raised into Rasa's save.
    broker.publish({"sender_id": "+14155550300", "event": "user", "parse_data": "nonsense"})
    broker.publish({"event": "user"})
    await broker.close()  # one last try, then what is left is given up on, and logged
    assert (broker.delivered, broker.dropped) == (0, 4)


# ------------------------------------------------------------------ configuration


def test_the_endpoints_files_configure_the_broker_and_its_forms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("PARLEY_ACTION_SERVER_URL", "PARLEY_ACTION_SERVER_TOKEN",
                 "PARLEY_RASA_TRACKER_STORE_URL", "PARLEY_REDIS_HOST", "PARLEY_RABBITMQ_HOST",
                 "PARLEY_RABBITMQ_USER", "PARLEY_RABBITMQ_PASSWORD"):  # fmt: skip
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("PARLEY_EVENTS_QUEUE", QUEUE)
    embedded = read_endpoint_config(str(PROJECT_ROOT / "bot" / "endpoints.yml"), "event_broker")
    scale = read_endpoint_config(str(PROJECT_ROOT / "bot" / "endpoints.scale.yml"), "event_broker")
    assert embedded is not None and scale is not None
    assert embedded.type == "bot.conversation_events.BackendEventBroker"
    # The scale profile publishes every event to the bounded queue alone: the backend
    # consumes it (`parley consume-events`), declaring it with the same bounds.
    assert scale.type == "bot.bounded_pika.BoundedPikaEventBroker"
    assert "forward_to" not in scale.kwargs
    assert scale.kwargs["queues"] == [QUEUE]
    bounds = queue_bounds(scale.kwargs["max_length"], scale.kwargs["message_ttl_hours"])
    assert bounds == queue_bounds() == {
        "x-max-length": 100_000, "x-overflow": "drop-head", "x-message-ttl": 168 * 3600 * 1000,
    }  # fmt: skip
    assert {"lead_form", "subscribe_form"} <= FORMS


async def test_every_event_is_forwarded_to_a_bounded_rabbitmq_queue_as_well(
    broker: BackendEventBroker, backend_with_pricing: RunningBackend
) -> None:
    """The queue keeps at most `max_length` events (the oldest dropped), each for at
    most `message_ttl_hours`: RabbitMQ enforces the queue's own arguments."""
    import aio_pika

    try:
        connection = await aio_pika.connect(RABBITMQ, timeout=5)
    except Exception as error:  # no RabbitMQ on this machine
        server_missing(f"RabbitMQ is not reachable at {RABBITMQ}: {error}")
    queue_name = f"parley-test-{uuid.uuid4().hex[:8]}"
    host = RABBITMQ.split("@")[-1].split(":")[0]
    config = EndpointConfig.from_dict(
        {"type": "bot.conversation_events.BackendEventBroker",
         "forward_to": {"type": "bot.bounded_pika.BoundedPikaEventBroker", "url": host,
                        "username": "guest", "password": "guest", "queues": [queue_name],
                        "max_length": 1, "message_ttl_hours": 2}}
    )  # fmt: skip
    forwarding = await BackendEventBroker.from_endpoint_config(config)
    forwarding.client = BackendClient(backend_with_pricing.url, backend_with_pricing.token, 5)
    number = a_number()
    try:
        await Conversations(forwarding).turn(number, said("price?", "ask_price"))
        await forwarding.drained()
        channel = await connection.channel()
        # Declared by the broker with its bounds: the same declaration is accepted, one
        # without them is refused (PRECONDITION_FAILED).
        queue = await channel.declare_queue(
            queue_name, durable=True,
            arguments={"x-max-length": 1, "x-overflow": "drop-head",
                       "x-message-ttl": 2 * 3600 * 1000},
        )  # fmt: skip
        seen: list[str] = []
        for _ in range(50):
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                if len(seen) >= 2:
                    break
                await asyncio.sleep(0.1)
                continue
            seen.append(json.loads(message.body)["event"])
        assert seen == ["user"]  # the turn published two; the older was dropped
        person = profile_of(backend_with_pricing, "sms", number)
        assert events_of(backend_with_pricing, person) == [
            ("intent_expressed", {"intent": "ask_price", "channel": "sms", "conversation": number})
        ]
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await forwarding.close()
        await connection.close()


async def test_the_scale_profile_publishes_every_event_to_the_bounded_queue_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bot/endpoints.scale.yml as Rasa loads it: Rasa's events go to RabbitMQ, in the
    format the backend's consumer reads, and to no backend over HTTP."""
    import aio_pika

    from bot.bounded_pika import BoundedPikaEventBroker

    try:
        connection = await aio_pika.connect(RABBITMQ, timeout=5)
    except Exception as error:  # no RabbitMQ on this machine
        server_missing(f"RabbitMQ is not reachable at {RABBITMQ}: {error}")
    for name, value in (("PARLEY_RABBITMQ_HOST", RABBITMQ.split("@")[-1].split(":")[0]),
                        ("PARLEY_RABBITMQ_USER", "guest"), ("PARLEY_RABBITMQ_PASSWORD", "guest"),
                        ("PARLEY_REDIS_HOST", "x"), ("PARLEY_RASA_TRACKER_STORE_URL", "x"),
                        ("PARLEY_ACTION_SERVER_URL", "x"), ("PARLEY_ACTION_SERVER_TOKEN", "x"),
                        ("PARLEY_EVENTS_QUEUE", "x")):  # fmt: skip
        monkeypatch.setenv(name, value)
    config = read_endpoint_config(str(PROJECT_ROOT / "bot" / "endpoints.scale.yml"), "event_broker")
    assert config is not None
    # A queue and exchange of this test's own (never a running `make run`'s).
    unique = f"parley-test-{uuid.uuid4().hex[:8]}"
    config.kwargs.update(queues=[unique], exchange_name=f"{unique}-exchange")
    broker = await EventBroker.create(config)
    assert isinstance(broker, BoundedPikaEventBroker) and broker.is_ready()
    # While RabbitMQ is away, Rasa keeps at most a queue's worth of events in memory.
    assert broker._unpublished_events.maxlen == 100_000
    number = a_number()
    channel = await connection.channel()
    try:
        await Conversations(broker).turn(
            number, [*said("price?", "ask_price"), ActionExecuted("utter_price")]
        )
        # The backend's consumer declares the queue with the shared bounds: accepted.
        bounds: dict[str, Any] = dict(queue_bounds())
        queue = await channel.declare_queue(unique, durable=True, arguments=bounds)
        published: list[dict[str, Any]] = []
        for _ in range(100):
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                if len(published) >= 3:
                    break
                await asyncio.sleep(0.05)
                continue
            published.append(json.loads(message.body))
        assert [e["event"] for e in published] == ["action", "user", "action"]
        assert all(e["sender_id"] == number and e["timestamp"] > 0 for e in published)
        assert published[1]["parse_data"]["intent"]["name"] == "ask_price"
    finally:
        await channel.queue_delete(unique)
        await channel.exchange_delete(f"{unique}-exchange")
        await broker.close()
        await connection.close()
