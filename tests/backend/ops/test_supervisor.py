"""The supervisor behind `parley run`, with real child processes."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import aiohttp
import pytest

from backend.ops.supervisor import Service, ServiceFailed, Supervisor, http_ok
from tests.servers import free_port


def python(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", code]


async def always(_: aiohttp.ClientSession) -> bool:
    return True


async def never(_: aiohttp.ClientSession) -> bool:
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_child_that_dies_is_named_with_its_exit_code_and_last_words() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out)
    await supervisor.start(Service("steady", python("import time; time.sleep(60)"), always))
    await supervisor.start(
        Service("fragile", python("print('cannot bind port 5055'); raise SystemExit(3)"), always)
    )
    failure = await supervisor.first_exit()
    steady_pid = supervisor._running[0].process.pid
    await supervisor.stop_all()

    assert failure.name == "fragile"
    assert failure.reason == "exited with code 3"
    assert failure.last_lines == ["cannot bind port 5055"]
    assert "[fragile] cannot bind port 5055" in out.getvalue()
    assert "stopping steady" in out.getvalue()
    assert not alive(steady_pid)


async def test_a_child_that_exits_while_starting_fails_the_health_wait() -> None:
    supervisor = Supervisor(io.StringIO())
    await supervisor.start(Service("broken", python("print('boom'); raise SystemExit(1)"), never))
    with pytest.raises(ServiceFailed) as failure:
        await supervisor.wait_healthy("broken", timeout=30)
    await supervisor.stop_all()
    assert "exited with code 1 while starting" in str(failure.value)
    assert failure.value.last_lines == ["boom"]


async def test_a_child_that_never_gets_healthy_fails_after_the_timeout() -> None:
    supervisor = Supervisor(io.StringIO())
    await supervisor.start(Service("slow", python("import time; time.sleep(60)"), never))
    with pytest.raises(ServiceFailed, match="did not become healthy within 1 s"):
        await supervisor.wait_healthy("slow", timeout=1)
    await supervisor.stop_all()


async def test_health_is_checked_over_http() -> None:
    port = free_port()
    supervisor = Supervisor(io.StringIO())
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    await supervisor.start(Service("web", argv, http_ok(f"http://127.0.0.1:{port}/")))
    seconds = await supervisor.wait_healthy("web", timeout=30)
    await supervisor.stop_all()
    assert seconds < 30


async def test_children_started_together_are_waited_for_together() -> None:
    """How `parley run` starts: everything at once, ready when all are; a child that
    fails while starting is named at once, not after the slowest one's wait."""
    port = free_port()
    supervisor = Supervisor(io.StringIO())
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    await supervisor.start(Service("web", argv, http_ok(f"http://127.0.0.1:{port}/")))
    await supervisor.start(Service("steady", python("import time; time.sleep(60)"), always))
    await supervisor.wait_all_healthy(["web", "steady"], timeout=30)

    await supervisor.start(Service("slow", python("import time; time.sleep(60)"), never))
    await supervisor.start(Service("broken", python("print('boom'); raise SystemExit(2)"), never))
    started = asyncio.get_running_loop().time()
    with pytest.raises(ServiceFailed) as failure:
        await supervisor.wait_all_healthy(["slow", "broken"], timeout=30)
    waited = asyncio.get_running_loop().time() - started
    await supervisor.stop_all()
    assert failure.value.name == "broken"
    assert failure.value.last_lines == ["boom"]
    assert waited < 30  # not the slow one's whole timeout


async def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    supervisor = Supervisor(io.StringIO())
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(60)"
    await supervisor.start(Service("stubborn", python(stubborn), always))
    pid = supervisor._running[0].process.pid
    await asyncio.sleep(0.5)  # let it install the handler
    await supervisor.stop_all(grace=0.5)
    assert not alive(pid)
