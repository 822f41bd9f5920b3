"""The backend's consumer of Rasa's conversation events (backend/rasa_events), on the
real RabbitMQ and the real databases: every event held once and in order, the intents
and forms in them recorded as the bot's HTTP broker records them, unreadable messages
set aside, and nothing acknowledged while the database is down."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select
from sqlalchemy.engine import make_url

from backend.core.models import Event, Identity, RasaEvent
from backend.rasa_events.consumer import RasaEventConsumer
from backend.rasa_events.store import transcript
from message_rules.rasa_events import BehaviourEvent, ConversationReader
from tests.backend.conftest import Api
from tests.backend.rasa_events.conftest import PATIENCE, Consumers, EventQueue, store_for
from tests.backend.rasa_events.rasa import Conversation
from tests.servers import POSTGRES_DSN, RABBITMQ_URL

FORMS = frozenset({"lead_form", "subscribe_form"})


def a_number() -> str:
    return f"+1415555{uuid.uuid4().int % 10000:04d}"


def as_posted(event: BehaviourEvent) -> dict[str, Any]:
    """The body the bot's HTTP broker posts for it (bot/backend_client.py,
    `IdentifiedEvent.as_json`)."""
    assert event.occurred_at is not None
    return {
        "type": event.type,
        "identity": {"kind": event.kind, "address": event.address},
        "properties": dict(event.properties),
        "occurred_at": event.occurred_at.isoformat(),
        "idempotency_key": event.idempotency_key,
    }


def what_the_http_broker_reports(events: list[dict[str, Any]]) -> list[BehaviourEvent]:
    reader = ConversationReader(FORMS)
    return [m for m in map(reader.read, events) if isinstance(m, BehaviourEvent)]


async def recorded(consumers: Consumers) -> list[tuple[str, dict[str, Any], str | None, datetime]]:
    async with consumers.sessions() as session:
        rows = await session.scalars(select(Event).order_by(Event.id))
        return [(e.type, e.properties, e.idempotency_key, e.occurred_at) for e in rows]


async def held_in_order(consumers: Consumers, sender: str) -> list[dict[str, Any]]:
    async with consumers.sessions() as session:
        return await transcript(session, sender)


# ------------------------------------------------------------------ stored once, in order


async def test_events_published_twice_are_held_once_in_rasas_order(
    consumers: Consumers, event_queue: EventQueue
) -> None:
    ada, bo = Conversation(a_number()), Conversation(f"web-{uuid.uuid4()}", "webchat")
    published = {
        ada.sender: [*ada.lead_form_started(), *ada.lead_form_finished()],
        bo.sender: [*bo.said("what does it cost", "ask_price"), bo.bot("From $19 a seat.")],
    }
    # Interleaved as two Rasa replicas would publish them, then all again (`rasa
    # export`, or a redelivery), with Rasa's export header.
    interleaved = [e for pair in zip(*published.values(), strict=False) for e in pair]
    interleaved += published[ada.sender][len(published[bo.sender]) :]
    consumer = await consumers.start()
    await event_queue.publish(interleaved)
    await event_queue.publish(interleaved, **{"rasa-export-process-id": uuid.uuid4().hex})
    total = sum(map(len, published.values()))
    await consumers.until_read(consumer, 2 * total)
    await consumers.until_stored(total, events=3 + 1)
    await consumers.stop_all()
    assert (consumer.totals["stored"], consumer.totals["duplicates"]) == (total, total)

    for sender, events in published.items():
        # Complete, and in Rasa's order in time: by timestamp, then arrival.
        in_time = sorted(events, key=lambda e: e["timestamp"])
        assert await held_in_order(consumers, sender) == in_time
    # The order of arrival is the tracker's own.
    async with consumers.sessions() as session:
        arrived = await session.scalars(
            select(RasaEvent.data).where(RasaEvent.sender_id == ada.sender).order_by(RasaEvent.id)
        )
        assert list(arrived) == published[ada.sender]
    assert await event_queue.waiting() == 0


async def test_a_batch_committed_but_not_acknowledged_is_delivered_again_and_held_once(
    consumers: Consumers, event_queue: EventQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when the process dies between its commit and its acknowledgement."""
    person = Conversation(a_number())
    consumer = await consumers.start()
    write = consumer._write
    lost: list[int] = []

    async def write_then_lose_the_channel(channel: Any, items: Any, stop: asyncio.Event) -> Any:
        refused = await write(channel, items, stop)
        if not lost:
            lost.append(len(items))
            await items[0][0].channel.close()  # before the acknowledgement
        return refused

    monkeypatch.setattr(consumer, "_write", write_then_lose_the_channel)
    events = [*person.lead_form_started(), *person.lead_form_finished()]
    await event_queue.publish(events)
    await consumers.until_stored(len(events), events=3)
    deadline = asyncio.get_running_loop().time() + PATIENCE
    while consumer.totals["duplicates"] < lost[0] or await event_queue.waiting():
        assert asyncio.get_running_loop().time() < deadline, consumer.totals
        await asyncio.sleep(0.05)
    assert consumer.totals["stored"] == len(events)
    assert consumer.totals["reported"] == 3


async def test_the_events_recorded_are_those_the_http_broker_reports_with_its_keys(
    consumers: Consumers, event_queue: EventQueue
) -> None:
    finisher, quitter = Conversation(a_number()), Conversation(a_number(), "voice")
    faq = Conversation(f"chat-{uuid.uuid4().hex}", "socketio")
    conversation = [
        *finisher.lead_form_started(), *quitter.lead_form_started(),
        *finisher.lead_form_finished(), *quitter.lead_form_stopped(),
        *faq.said("is there a free trial?", "faq", full_retrieval_intent_name="faq/free_trial"),
    ]  # fmt: skip
    expected = what_the_http_broker_reports(conversation)
    assert [e.type for e in expected].count("form_completed") == 1
    await consumers.start()
    await event_queue.publish(conversation)
    await consumers.until_stored(len(conversation), events=len(expected))

    assert await recorded(consumers) == [
        (e.type, dict(e.properties), e.idempotency_key, e.occurred_at) for e in expected
    ]
    async with consumers.sessions() as session:
        owners = {
            event.idempotency_key: (identity.kind, identity.address)
            for event, identity in await session.execute(
                select(Event, Identity).join(Identity, Identity.profile_id == Event.profile_id)
            )
        }
    assert owners == {e.idempotency_key: (e.kind, e.address) for e in expected}


async def test_both_paths_record_each_event_once_whichever_comes_first(
    consumers: Consumers, event_queue: EventQueue, client: TestClient, service: Api
) -> None:
    # Before the app's fixed clock: the events API refuses events from its future.
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    first_by_http = Conversation(a_number(), start=start)
    first_by_queue = Conversation(a_number(), start=start)
    conversations = {
        c.sender: [*c.lead_form_started(), *c.lead_form_finished()]
        for c in (first_by_http, first_by_queue)
    }
    for_http = what_the_http_broker_reports(conversations[first_by_http.sender])
    answer = await service.post("/api/v1/events", {"events": [as_posted(e) for e in for_http]})
    assert answer["stored"] == 3
    await consumers.start()
    for events in conversations.values():
        await event_queue.publish(events)
    await consumers.until_stored(sum(map(len, conversations.values())), events=6)

    # Now the HTTP broker reports what the queue brought first: duplicates.
    late = what_the_http_broker_reports(conversations[first_by_queue.sender])
    answer = await service.post("/api/v1/events", {"events": [as_posted(e) for e in late]})
    assert (answer["stored"], answer["duplicates"]) == (0, 3)
    assert len(await recorded(consumers)) == 6


async def test_a_restarted_consumer_still_knows_the_channel_of_a_completed_form(
    consumers: Consumers, event_queue: EventQueue
) -> None:
    person = Conversation(a_number(), "voice")
    await consumers.start()
    started = person.lead_form_started()
    await event_queue.publish(started)
    await consumers.until_stored(len(started), events=1)
    await consumers.stop_all()

    await consumers.start()  # a new process would know nothing of the conversation
    finished = person.lead_form_finished()
    await event_queue.publish(finished)
    await consumers.until_stored(len(started) + len(finished), events=3)
    [*_, (kind, properties, key, _)] = await recorded(consumers)
    assert (kind, properties) == ("form_completed", {"form": "lead_form"})
    async with consumers.sessions() as session:
        event = await session.scalar(select(Event).where(Event.idempotency_key == key))
        assert event is not None
        identity = await session.scalar(
            select(Identity).where(Identity.profile_id == event.profile_id)
        )
    assert identity is not None and (identity.kind, identity.address) == ("voice", person.sender)


async def test_an_address_the_events_api_would_refuse_is_held_but_not_reported(
    consumers: Consumers, event_queue: EventQueue
) -> None:
    not_a_number, number = Conversation("not-a-phone-number"), Conversation(a_number())
    events = [*not_a_number.said("price?", "ask_price"), *number.said("price?", "ask_price")]
    await consumers.start()
    await event_queue.publish(events)
    await consumers.until_stored(4, events=1)
    assert [p for _, p, _, _ in await recorded(consumers)] == [
        {"intent": "ask_price", "channel": "sms", "conversation": number.sender}
    ]


# ---------------------------------------------------------------- what is not an event


async def test_unreadable_messages_are_set_aside_and_never_hold_up_the_others(
    consumers: Consumers, event_queue: EventQueue, database_url: str
) -> None:
    person = Conversation(a_number())
    before, after = person.said("hi", "greet"), person.said("price?", "ask_price")
    unreadable = [
        b"not json at all",
        b"\xff\xfe\x00",
        b"[1, 2, 3]",
        b'"a string"',
        json.dumps({"event": "user", "timestamp": 1.0}).encode(),  # no sender
        json.dumps({"sender_id": person.sender, "timestamp": 1.0}).encode(),  # no event
        json.dumps({"sender_id": person.sender, "event": "user"}).encode(),  # no time
        b'{"sender_id": "x", "event": "user", "timestamp": NaN}',
        b"[" * 100_000 + b"]" * 100_000,  # nested deeper than any parser goes
        json.dumps({"sender_id": "w" * 400, "event": "user", "timestamp": 1.0}).encode(),
    ]
    # A NUL character: PostgreSQL refuses to store it (found by storing one at a time).
    nul = {**person.bot("a\x00b")}
    consumer = await consumers.start(batch=50)
    await event_queue.publish(before)
    for body in unreadable:
        await event_queue.publish_body(body)
    await event_queue.publish([nul, *after])
    postgres = make_url(database_url).get_backend_name() == "postgresql"
    await consumers.until_read(consumer, len(before) + len(unreadable) + 1 + len(after))
    await consumers.until_stored(4 + (0 if postgres else 1), events=2)
    await consumers.stop_all()

    set_aside = await event_queue.set_aside()
    expected = len(unreadable) + (1 if postgres else 0)
    assert len(set_aside) == expected == consumer.totals["unreadable"]
    assert [m.body for m in set_aside][: len(unreadable)] == unreadable
    reasons = [str((m.headers or {}).get("x-parley-unreadable")) for m in set_aside]
    assert reasons[0] == "not JSON in UTF-8" and reasons[2] == "not a JSON object"
    if postgres:
        assert reasons[-1].startswith("refused: ")
    assert await event_queue.waiting() == 0


async def test_a_queue_declared_with_other_bounds_is_reported_not_changed(
    consumers: Consumers, event_queue: EventQueue, capfd: pytest.CaptureFixture[str]
) -> None:
    consumer = RasaEventConsumer(
        url=RABBITMQ_URL, queue=event_queue.name, bounds={"x-max-length": 7},
        sessions=consumers.sessions, store=store_for(consumers.settings),
        first_retry=0.05, max_retry=0.05,
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    logged, deadline = "", asyncio.get_running_loop().time() + PATIENCE
    while "rasa_events.queue_declared_otherwise" not in logged:
        assert asyncio.get_running_loop().time() < deadline, logged
        await asyncio.sleep(0.05)
        logged += "".join(capfd.readouterr())
    assert f"rabbitmqctl delete_queue {event_queue.name}" in logged
    assert not consumer.consuming.is_set()
    stop.set()
    await asyncio.wait_for(task, PATIENCE)
    # The queue is as Rasa declared it: the same declaration is still accepted.
    assert await event_queue.waiting() == 0


# -------------------------------------------------------------------- the database down


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_with_the_database_down_nothing_is_acknowledged_and_all_arrive_after(
    consumers: Consumers, event_queue: EventQueue, database_url: str
) -> None:
    name = make_url(database_url).database
    person = Conversation(a_number())
    first = person.said("hi", "greet")
    await consumers.start(prefetch=10, batch=5)
    await event_queue.publish(first)
    await consumers.until_stored(2, events=1)
    # The backend's database goes away (as when PostgreSQL restarts): connections are
    # refused and those open are cut.
    await consumers.engine.dispose()
    admin = await asyncpg.connect(POSTGRES_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        burst = [e for n in range(20) for e in person.said(f"question {n}", "ask_price")]
        await event_queue.publish(burst)
        await asyncio.sleep(1.5)  # the consumer tries, and tries again
        # Nothing was acknowledged: stopped now, RabbitMQ holds every one of them.
        await consumers.stop_all()
        await consumers.until_waiting(len(burst))
        await consumers.start(prefetch=10, batch=5)
        await asyncio.sleep(0.5)
        assert await event_queue.waiting() > 0  # handed over, not acknowledged
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
    await consumers.until_stored(2 + len(burst), events=1 + 20)
    assert await event_queue.waiting() == 0
    assert await held_in_order(consumers, person.sender) == sorted(
        [*first, *burst], key=lambda e: e["timestamp"]
    )


def test_only_errors_of_a_database_that_cannot_be_used_are_waited_out() -> None:
    from sqlalchemy import exc

    from backend.core.database import database_unavailable

    class PostgresError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    def wrapped(orig: Exception) -> exc.DBAPIError:
        return exc.DBAPIError("INSERT …", {}, orig)

    for waited in (ConnectionRefusedError(), TimeoutError(),
                   exc.OperationalError("…", {}, Exception("database is locked")),
                   wrapped(PostgresError("55000")), wrapped(PostgresError("57P01")),
                   wrapped(PostgresError("08006")), wrapped(PostgresError("42P01"))):  # fmt: skip
        assert database_unavailable(waited), waited
    for refused in (exc.IntegrityError("…", {}, Exception("unique")),
                    wrapped(PostgresError("22P05")), wrapped(PostgresError("22001")),
                    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"), TypeError()):  # fmt: skip
        assert not database_unavailable(refused), refused


async def test_a_batch_waits_a_moment_for_the_rest_of_a_turns_events() -> None:
    """A turn publishes its events one by one: those arriving within the linger go in one
    transaction; a batch never waits longer, never grows past its size, and a stop ends
    it at once."""
    from backend.rasa_events.consumer import _next_batch

    inbox: asyncio.Queue[Any] = asyncio.Queue()

    async def trickle(items: list[Any], gap: float) -> None:
        for item in items:
            await inbox.put(item)
            await asyncio.sleep(gap)

    started = asyncio.get_running_loop().time()
    (batch, end), _ = await asyncio.gather(
        _next_batch(inbox, 100, 0.2), trickle([object() for _ in range(5)], 0.005)
    )
    waited = asyncio.get_running_loop().time() - started
    assert (len(batch), end) == (5, None)
    assert 0.2 <= waited < 1.0  # the linger, and no more

    for _ in range(7):
        inbox.put_nowait(object())
    batch, _ = await _next_batch(inbox, 3, 10.0)
    assert len(batch) == 3 and inbox.qsize() == 4  # full: no waiting

    while not inbox.empty():
        inbox.get_nowait()
    inbox.put_nowait(object())
    inbox.put_nowait("stop")
    batch, end = await _next_batch(inbox, 100, 10.0)
    assert (len(batch), end) == (1, "stop")
