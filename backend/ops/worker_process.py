"""A scheduler worker on its own: the follow-up sequences' worker without the HTTP API.

`parley worker` builds the backend application (the same database, door and settings)
and runs only its start-up and clean-up contexts, the scheduler among them, with no
listening socket. Operators run as many as they need next to API replicas that have
`PARLEY_SCHEDULER_ENABLED=false`; leases keep them from running the same step twice.
SIGTERM or SIGINT lets the round in progress finish, then the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

from aiohttp import web

from backend.api.app import create_app
from backend.api.keys import SMS_DOOR, WORKER
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.core.settings import Settings

log = get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_settings(settings: Settings) -> Settings:
    """The settings for a worker process: its scheduler runs, whatever the API's says."""
    return settings.model_copy(update={"scheduler_enabled": True})


async def run_worker(
    settings: Settings, clock: Clock | None = None, stop: asyncio.Event | None = None
) -> None:
    """Run the scheduler until `stop` is set, or until SIGTERM or SIGINT.

    Raises what `create_app` raises (`DataFileInvalid`, `SecretKeyMissing`)."""
    app = create_app(worker_settings(settings), clock)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()  # the database, the door, the scheduler: no site, no socket
        worker = app[WORKER]
        log.info(
            "worker.started",
            owner=worker.owner,
            pid=os.getpid(),
            host=socket.gethostname(),
            sequences=len(worker.sequences),
            sms=SMS_DOOR in app,
            paused=worker.paused,
            batch=worker.batch,
            lease_seconds=worker.lease.total_seconds(),
        )
        await stop.wait()
        log.info("worker.stopping", owner=worker.owner)
    finally:
        await runner.cleanup()  # the round in progress ends, the engine is disposed
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    log.info("worker.stopped", owner=worker.owner)
