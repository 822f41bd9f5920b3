"""The scale profile's one local entry point: a reverse proxy that spreads requests over
the replicas of each service (`parley run --profile scale`).

It listens where the embedded default's single processes listen (the backend's and
Rasa's ports), so every URL a person, Twilio or the action servers use is the same in
both profiles, and passes each request to the next replica of that service in turn.
WebSockets are passed both ways (the web chat's socket.io runs over WebSocket only, so
no replica needs to be sticky: pushes reach a visitor through Redis, whichever replica
holds the socket).

A replica that refuses connections is skipped for a second and the request goes to the
next one: it never reached the replica, so trying again elsewhere cannot run it twice.
A replica that fails after taking the request (it died in the middle) is not tried
again for a request that changes something (POST, PUT, PATCH, DELETE): it may have done
its work, so the caller gets a 502 with a problem body and decides, as it would for a
timeout. A safe request (GET, HEAD, OPTIONS; RFC 9110 section 9.2.1) changes nothing,
so it goes on to the next replica, as nginx's `proxy_next_upstream` does; PUT and
DELETE are left out although RFC 9110 calls them idempotent, because a second erase
answers differently from the first.
No replica at all: 503. In production a load balancer does this job (docker-compose.yml
says so); this one exists so that the topology runs and is tested on one machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import WSMsgType, web

from backend.api.problems import Problem

log = logging.getLogger("parley.entry_point")

# Headers about one connection, not the request (RFC 9110 section 7.6.1), and those
# aiohttp sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "content-length", "host",
    }
)  # fmt: skip
DOWN_SECONDS = 1.0
MAX_BODY = 16 * 1024 * 1024
CHUNK = 64 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Replica:
    url: str
    down_until: float = 0.0


@dataclass
class Spread:
    """Round robin over a service's replicas, those recently refusing connections last."""

    replicas: list[Replica]
    clock: Callable[[], float] = time.monotonic
    _next: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, urls: Sequence[str]) -> Spread:
        if not urls:
            raise ValueError("a service needs at least one replica")
        return cls([Replica(url.rstrip("/")) for url in urls])

    def order(self) -> list[Replica]:
        start = next(self._next) % len(self.replicas)
        turn = self.replicas[start:] + self.replicas[:start]
        now = self.clock()
        return [r for r in turn if r.down_until <= now] + [r for r in turn if r.down_until > now]

    def refused(self, replica: Replica) -> None:
        replica.down_until = self.clock() + DOWN_SECONDS


def _forwarded(headers: aiohttp.typedefs.LooseHeaders) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k.lower() not in HOP_BY_HOP}


def create_proxy(name: str, spread: Spread) -> web.Application:
    """One service's entry: every path and method, passed to its replicas."""
    app = web.Application(client_max_size=MAX_BODY)

    async def open_client(app: web.Application) -> None:
        # No total timeout: a turn or a server-sent stream may take long; the replicas
        # bound their own work.
        app["client"] = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            auto_decompress=False,
        )

    async def close_client(app: web.Application) -> None:
        await app["client"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        client: aiohttp.ClientSession = request.app["client"]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, client, spread, name)
        body = await request.read()
        headers = {**_forwarded(request.headers), "X-Forwarded-For": request.remote or ""}
        failed = False
        for replica in spread.order():
            try:
                upstream = await client.request(
                    request.method, replica.url + request.path_qs,
                    headers=headers, data=body, allow_redirects=False,
                )  # fmt: skip
            except aiohttp.ClientConnectorError:
                spread.refused(replica)
                log.warning("entry_point.replica_refused service=%s replica=%s", name, replica.url)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                log.warning(
                    "entry_point.replica_failed service=%s replica=%s error=%s",
                    name, replica.url, type(error).__name__,
                )  # fmt: skip
                if request.method in SAFE_METHODS:
                    failed = True
                    continue
                return _problem(502, f"a {name} replica failed while handling the request")
            return await _relay(request, upstream, name, replica)
        if failed:
            return _problem(502, f"every {name} replica failed while handling the request")
        return _problem(503, f"no {name} replica is answering", retry_after=1)

    app.on_startup.append(open_client)
    app.on_cleanup.append(close_client)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


async def _relay(
    request: web.Request, upstream: aiohttp.ClientResponse, name: str, replica: Replica
) -> web.StreamResponse:
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.update(_forwarded(upstream.headers))
        if "Content-Length" in upstream.headers:
            response.content_length = int(upstream.headers["Content-Length"])
        await response.prepare(request)
        try:
            async for chunk in upstream.content.iter_chunked(CHUNK):
                await response.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # Headers are out: all that can be done is to end the response short.
            log.warning(
                "entry_point.response_cut service=%s replica=%s error=%s",
                name, replica.url, type(error).__name__,
            )  # fmt: skip
            raise web.HTTPBadGateway() from error
        await response.write_eof()
        return response


async def _websocket(
    request: web.Request, client: aiohttp.ClientSession, spread: Spread, name: str
) -> web.StreamResponse:
    for replica in spread.order():
        try:
            upstream = await client.ws_connect(
                replica.url.replace("http", "ws", 1) + request.path_qs,
                headers={
                    k: v for k, v in _forwarded(request.headers).items()
                    if not k.lower().startswith("sec-websocket")
                },
                autoping=False,
            )  # fmt: skip
        except aiohttp.ClientConnectorError:
            spread.refused(replica)
            continue
        except aiohttp.WSServerHandshakeError as refused:
            return _problem(refused.status, f"the {name} replica refused the WebSocket")
        downstream = web.WebSocketResponse(autoping=False)
        await downstream.prepare(request)
        async with upstream:
            await _pipe_both_ways(downstream, upstream)
        return downstream
    return _problem(503, f"no {name} replica is answering", retry_after=1)


async def _pipe_both_ways(
    downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse
) -> None:
    async def copy(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type == WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == WSMsgType.PING:
                await sink.ping(message.data)
            elif message.type == WSMsgType.PONG:
                await sink.pong(message.data)
        await sink.close()

    tasks = [
        asyncio.create_task(copy(downstream, upstream)),
        asyncio.create_task(copy(upstream, downstream)),
    ]
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await task


def _problem(status: int, detail: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    return Problem(status, detail, headers=headers).response()


async def start(services: Mapping[str, tuple[str, int, Sequence[str]]]) -> list[web.AppRunner]:
    """Listen for each service ({name: (host, port, replica URLs)}); stop with `stop`."""
    runners: list[web.AppRunner] = []
    try:
        for name, (host, port, urls) in services.items():
            runner = web.AppRunner(create_proxy(name, Spread.of(urls)), access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, host, port).start()
            log.info("entry_point.serving service=%s port=%d replicas=%d", name, port, len(urls))
    except BaseException:
        await stop(runners)
        raise
    return runners


async def stop(runners: list[web.AppRunner]) -> None:
    for runner in runners:
        await runner.cleanup()
