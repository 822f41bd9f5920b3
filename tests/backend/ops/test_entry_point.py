"""The scale profile's entry point (backend/ops/entry_point.py) in front of real aiohttp
replicas on loopback: requests spread in turn, passed whole both ways, a replica that
refuses connections skipped without losing the request, a replica that dies mid-request
answered by a 502 problem when the request may have changed something and passed to the
next replica when it cannot, none left a 503, and WebSockets passed both ways."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from backend.ops.entry_point import Spread, create_proxy
from tests.servers import free_port


def replica(name: str) -> web.Application:
    app = web.Application()

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "replica": name,
                "method": request.method,
                "path_qs": request.path_qs,
                "body": (await request.read()).decode(),
                "header": request.headers.get("X-Parley-Test"),
            },
            status=201,
            headers={"X-Replica": name},
        )

    async def die(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # as a process killed in the middle of the request
        await asyncio.sleep(1)
        return web.Response()

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str(f"{name}: {message.data}")
        return ws

    app.router.add_get("/socket.io/", socket)
    app.router.add_post("/die", die)
    app.router.add_route("*", "/{path:.*}", echo)
    return app


def dying() -> web.Application:
    """A replica killed in the middle of every request it takes."""
    app = web.Application()

    async def die(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()
        await asyncio.sleep(1)
        return web.Response()

    app.router.add_route("*", "/{path:.*}", die)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def entry(*urls: str) -> AsyncIterator[str]:
    async with serving(create_proxy("backend", Spread.of(urls))) as url:
        yield url


async def test_requests_spread_in_turn_and_pass_whole() -> None:
    seen: Counter[str] = Counter()
    async with (
        serving(replica("a")) as a,
        serving(replica("b")) as b,
        entry(a, b) as url,
        aiohttp.ClientSession() as http,
    ):
        for n in range(10):
            async with http.post(
                f"{url}/api/v1/events?n={n}", data="é body", headers={"X-Parley-Test": "kept"}
            ) as response:
                assert response.status == 201 and response.headers["X-Replica"] in "ab"
                got = await response.json()
            assert (got["method"], got["path_qs"], got["body"], got["header"]) == (
                "POST", f"/api/v1/events?n={n}", "é body", "kept",
            )  # fmt: skip
            seen[got["replica"]] += 1
    assert seen == {"a": 5, "b": 5}


async def test_a_replica_refusing_connections_loses_no_request() -> None:
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with serving(replica("a")) as a, entry(gone, a) as url, aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.get(f"{url}/health") as response:
                assert response.status == 201
                assert (await response.json())["replica"] == "a"


async def test_no_replica_is_a_503_problem_and_one_dying_mid_request_a_502() -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    async with (
        entry(gone) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/webhooks/rest/webhook") as response,
    ):
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        assert response.headers["Retry-After"] == "1"
        assert json.loads(await response.text())["status"] == 503
    async with (
        serving(replica("a")) as a,
        entry(a) as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/die", data="x") as response,
    ):
        assert response.status == 502
        assert (await response.json(content_type=None))["status"] == 502


async def test_a_read_is_passed_on_when_its_replica_dies_and_a_write_is_not() -> None:
    async with (
        serving(dying()) as gone,
        serving(replica("a")) as a,
        entry(gone, a) as url,
        aiohttp.ClientSession() as http,
    ):
        for method in ("GET", "HEAD", "OPTIONS") * 2:  # each method meets the dying one once
            async with http.request(method, f"{url}/conversations/c1/tracker") as response:
                assert response.status == 201, method
                assert response.headers["X-Replica"] == "a"
        statuses = []
        for method in ("POST", "POST", "PUT", "PUT", "PATCH", "PATCH", "DELETE", "DELETE"):
            async with http.request(method, f"{url}/api/v1/profiles/p1", data="x") as response:
                statuses.append((method, response.status))
        # Each pair met the dying replica once: that request is a 502, never run twice.
        assert sorted(statuses) == sorted(
            [(m, 502) for m in ("POST", "PUT", "PATCH", "DELETE")]
            + [(m, 201) for m in ("POST", "PUT", "PATCH", "DELETE")]
        )
    async with (
        serving(dying()) as gone,
        entry(gone) as url,
        aiohttp.ClientSession() as http,
        http.get(f"{url}/conversations/c1/tracker") as response,
    ):
        assert response.status == 502
        assert (await response.json(content_type=None))["detail"] == (
            "every backend replica failed while handling the request"
        )


async def test_websockets_pass_both_ways() -> None:
    async with (
        serving(replica("a")) as a,
        entry(a) as url,
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket") as ws,
    ):
        await ws.send_str("hello")
        assert (await ws.receive(timeout=5)).data == "a: hello"
        await ws.send_str("again")
        assert (await ws.receive(timeout=5)).data == "a: again"
