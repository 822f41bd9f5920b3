"""Starting, health-checking and stopping a set of child processes as one service.

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops the children in order. Their output is passed through
line by line with the child's name in front; the last lines are kept so that a crash
can be explained.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp

# Answers True once the service is ready; may raise or return False while it is not.
HealthCheck = Callable[[aiohttp.ClientSession], Awaitable[bool]]


@dataclass
class Service:
    name: str
    argv: list[str]
    health: HealthCheck
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


class ServiceFailed(RuntimeError):
    def __init__(self, name: str, reason: str, last_lines: list[str]) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name
        self.reason = reason
        self.last_lines = last_lines


def http_ok(url: str, ready: Callable[[object], bool] | None = None) -> HealthCheck:
    """A health check that GETs `url` and wants a 2xx (and, optionally, a ready JSON body)."""

    async def check(client: aiohttp.ClientSession) -> bool:
        async with client.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            if response.status >= 300:
                return False
            return ready is None or ready(await response.json(content_type=None))

    return check


def say(out: TextIO, message: str) -> None:
    """A line from the supervisor itself."""
    out.write(f"[parley] {message}\n")
    out.flush()


def _die_with_parent() -> None:
    # Linux: if the supervisor is killed outright, its children get SIGTERM too.
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Running:
    service: Service
    process: asyncio.subprocess.Process
    output: deque[str]
    pump: asyncio.Task[None]


class Supervisor:
    def __init__(self, out: TextIO = sys.stdout, tail: int = 40) -> None:
        self._out = out
        self._tail = tail
        self._running: list[_Running] = []

    def say(self, message: str) -> None:
        say(self._out, message)

    async def start(self, service: Service) -> None:
        process = await asyncio.create_subprocess_exec(
            *service.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **service.env},
            cwd=service.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        output: deque[str] = deque(maxlen=self._tail)
        pump = asyncio.create_task(self._pump(service.name, process, output))
        self._running.append(_Running(service, process, output, pump))

    async def restart(self, name: str) -> None:
        """Start `name` again after it exited (its last lines are kept in the report)."""
        running = self._find(name)
        self._running.remove(running)
        await self.start(running.service)

    async def _pump(
        self, name: str, process: asyncio.subprocess.Process, output: deque[str]
    ) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            output.append(line)
            self._out.write(f"[{name}] {line}\n")
            self._out.flush()

    def _find(self, name: str) -> _Running:
        return next(r for r in self._running if r.service.name == name)

    async def wait_healthy(self, name: str, timeout: float, progress_every: float = 15.0) -> float:
        """Seconds until `name` answered healthy; ServiceFailed if it died or took too long."""
        running = self._find(name)
        started = time.monotonic()
        next_progress = started + progress_every
        async with aiohttp.ClientSession() as client:
            while True:
                if running.process.returncode is not None:
                    await running.pump
                    raise ServiceFailed(
                        name,
                        f"exited with code {running.process.returncode} while starting",
                        list(running.output),
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                    if await running.service.health(client):
                        return time.monotonic() - started
                now = time.monotonic()
                if now - started > timeout:
                    raise ServiceFailed(
                        name, f"did not become healthy within {timeout:.0f} s", list(running.output)
                    )
                if now >= next_progress:
                    self.say(f"still waiting for {name} ({now - started:.0f} s)…")
                    next_progress = now + progress_every
                await asyncio.sleep(0.25)

    async def wait_all_healthy(self, names: list[str], timeout: float) -> None:
        """Wait until every one of `names` answers healthy, side by side; the first
        ServiceFailed stops the waiting for the others."""
        waits = [asyncio.create_task(self.wait_healthy(name, timeout)) for name in names]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
            for wait in done:
                wait.result()  # raises the first failure
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def first_exit(self) -> ServiceFailed:
        """Wait until any child exits, and say which and why."""
        waits = {asyncio.create_task(r.process.wait()): r for r in self._running}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        running = waits[next(iter(done))]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(running.pump, 2)
        code = running.process.returncode
        reason = (
            f"was killed by signal {-code}" if code and code < 0 else f"exited with code {code}"
        )
        return ServiceFailed(running.service.name, reason, list(running.output))

    async def stop_all(self, grace: float = 15.0) -> None:
        """Stop children in reverse start order: SIGTERM, then SIGKILL after `grace` s."""
        for running in reversed(self._running):
            process = running.process
            if process.returncode is None:
                self.say(f"stopping {running.service.name}")
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), grace)
                except TimeoutError:
                    self.say(f"{running.service.name} did not stop in {grace:.0f} s; killing it")
                    _signal_group(process.pid, signal.SIGKILL)
                    await process.wait()
            # Anything the child started in its own group goes too.
            _signal_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(running.pump, 2)
        self._running.clear()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def run_to_completion(
    argv: list[str],
    out: TextIO,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    keep: list[str] | None = None,
) -> int:
    """Run one command in the foreground, its output passed through as it comes (progress
    bars included) and, if `keep` is given, collected there; its exit code. If the caller
    is cancelled (Ctrl-C), the command stops too.
    """
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.read(4096):
            text = chunk.decode(errors="replace")
            out.write(text)
            out.flush()
            if keep is not None:
                keep.append(text)
        return await process.wait()
    finally:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 10)
            _signal_group(process.pid, signal.SIGKILL)
