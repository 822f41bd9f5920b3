"""`parley consume-events`: the consumer of Rasa's conversation events in a process of
its own (scale profile; backend.rasa_events.consumer).

It assembles what recording an event needs, as the API does (the scoring rules, the
sequences, the profile directory with the erasure key, the bot's forms), brings scores
up to date with the rules as every backend process does at start-up, and consumes until
SIGTERM or SIGINT; then the batch in hand is finished and the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal

from backend import data_files
from backend.core import secret_key
from backend.core.clock import Clock, SystemClock
from backend.core.database import create_engine, create_session_factory, one_starting_at_a_time
from backend.core.logs import get_logger
from backend.core.settings import Settings
from backend.events.recording import EventRecorder
from backend.people.profiles import ProfileDirectory
from backend.rasa_events.consumer import RasaEventConsumer
from backend.rasa_events.store import RasaEventStore
from backend.scoring import rules as scoring
from message_rules.event_queue import queue_bounds

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_consumer(
    settings: Settings, clock: Clock | None = None, stop: asyncio.Event | None = None
) -> None:
    """Consume Rasa's events until `stop` is set, or until SIGTERM or SIGINT.

    Raises what reading data/ raises (`DataFileInvalid`) and `SecretKeyMissing`."""
    clock = clock or SystemClock()
    rules = data_files.load_scoring(settings.data_path)
    recorder = EventRecorder(
        ProfileDirectory(clock=clock, rules=rules, erasure_key=secret_key.load_or_create(settings)),
        data_files.load_sequences(settings.data_path),
    )
    forms = data_files.load_forms()
    if not forms:
        log.warning("rasa_events.no_forms", domain=str(data_files.DOMAIN_DIR))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    engine = create_engine(settings.resolved_database_url)
    try:
        sessions = create_session_factory(engine)
        async with sessions.begin() as session:
            await one_starting_at_a_time(session)
            if await scoring.ensure_current(session, rules, clock.now()):
                log.info("scores.rebuilt", reason="scoring rules changed")
        consumer = RasaEventConsumer(
            url=settings.resolved_rabbitmq_url,
            queue=settings.events_queue,
            bounds=queue_bounds(settings.events_queue_max_length, settings.events_queue_ttl_hours),
            sessions=sessions,
            store=RasaEventStore(recorder, forms, clock, settings.default_phone_region),
            prefetch=settings.events_prefetch,
            batch=settings.events_batch,
        )
        log.info(
            "rasa_events.started", pid=os.getpid(), address=consumer.address,
            queue=consumer.queue, forms=",".join(sorted(forms)),
        )  # fmt: skip
        await consumer.run(stop)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await engine.dispose()
