"""Rasa's channels on a real Sanic server on loopback, registered by Rasa's own
`register()` under `/webhooks/`, as `rasa run` does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rasa.core.channels.channel import InputChannel, register
from sanic import Sanic


@asynccontextmanager
async def serving_channels(channels: list[InputChannel], agent: object) -> AsyncIterator[str]:
    """The server's base URL while the block runs; `agent` handles the messages."""
    # Sanic 21.12 rewrites its own methods when an app starts; in test mode it keeps the
    # originals, so that more than one app can start in one process (as sanic-testing does).
    test_mode, Sanic.test_mode = Sanic.test_mode, True
    try:
        app = Sanic(f"channel-test-{uuid.uuid4().hex}")
        app.ctx.agent = agent
        register(channels, app, route="/webhooks/")
        # Any: Sanic's AsyncioServer is only partly typed (its `server` is typed as None).
        server: Any = await app.create_server(
            host="127.0.0.1", port=0, return_asyncio_server=True, access_log=False
        )
        await server.startup()
        await server.before_start()
        port = server.server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            await server.before_stop()
            server.close()
            await server.wait_closed()
            await server.after_stop()
    finally:
        Sanic.test_mode = test_mode
