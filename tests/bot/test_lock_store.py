"""Parley's lock stores (bot/lock_store.py), on SQLite and on the real Redis: processes
racing for the same conversations never hold one at once, tickets are served in the
order drawn, an abandoned ticket expires, and Rasa builds them from the endpoints and
lets several Sanic workers share them."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from rasa.core.lock_store import LockStore
from rasa.core.utils import number_of_sanic_workers
from rasa.utils.endpoints import EndpointConfig

from bot.lock_store import AtomicRedisLockStore, SQLiteLockStore
from bot.settings import PROJECT_ROOT
from tests.servers import server_missing

# One racing process: `turns` times, lock a conversation, read its counter, yield to
# the others, write the counter back plus one, and note when it held the lock.
RACER = """
import asyncio, json, os, sys, time
from bot.lock_store import AtomicRedisLockStore, SQLiteLockStore

where, folder, turns = sys.argv[1], sys.argv[2], int(sys.argv[3])
conversations = sys.argv[4:]

async def main():
    if where.startswith("redis:"):
        store = AtomicRedisLockStore(host="127.0.0.1", db=5, key_prefix=where[6:])
    else:
        store = SQLiteLockStore(where)
    for turn in range(turns):
        conversation = conversations[turn % len(conversations)]
        async with store.lock(conversation, lock_lifetime=60, wait_time_in_seconds=0.002):
            entered = time.monotonic()
            counter = os.path.join(folder, conversation)
            value = int(open(counter).read()) if os.path.exists(counter) else 0
            await asyncio.sleep(0.002)
            with open(counter, "w") as out:
                out.write(str(value + 1))
            held = (conversation, entered, time.monotonic(), os.getpid())
        with open(os.path.join(folder, "held.jsonl"), "a") as out:
            out.write(json.dumps(held) + "\\n")

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", "redis"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the racing processes keep their locks: a SQLite file, or Redis (db 5)
    under a key prefix of this test's own."""
    if request.param == "sqlite":
        yield str(tmp_path / "locks.db")
        return
    client = redis.Redis(host="127.0.0.1", db=5)
    try:
        client.ping()
    except redis.ConnectionError:
        server_missing("Redis is not running on 127.0.0.1:6379")
    prefix = f"test{secrets.token_hex(4)}"
    yield f"redis:{prefix}"
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


def make_store(where: str) -> LockStore:
    if where.startswith("redis:"):
        return AtomicRedisLockStore(host="127.0.0.1", db=5, key_prefix=where[6:])
    return SQLiteLockStore(where)


def test_processes_racing_for_conversations_never_hold_one_at_once(
    store_at: str, tmp_path: Path
) -> None:
    folder = tmp_path / "counters"
    folder.mkdir()
    conversations, processes, turns = ["alice", "bob"], 4, 40
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, store_at, str(folder), str(turns), *conversations],
            cwd=PROJECT_ROOT,
        )
        for _ in range(processes)
    ]
    assert [racer.wait(timeout=120) for racer in racers] == [0] * processes
    # No update lost: each read-sleep-write saw the one before it.
    for conversation in conversations:
        assert int((folder / conversation).read_text()) == processes * turns // 2
    held = [json.loads(line) for line in (folder / "held.jsonl").read_text().splitlines()]
    assert len(held) == processes * turns
    assert len({pid for *_, pid in held}) == processes
    for conversation in conversations:
        spans = sorted((start, end) for name, start, end, _ in held if name == conversation)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two processes held {conversation} at once"
    # Every lock is gone once nobody waits.
    assert make_store(store_at).get_lock("alice") is None


async def test_tickets_are_served_in_the_order_drawn(store_at: str) -> None:
    store = make_store(store_at)
    served: list[int] = []

    async def turn(number: int) -> None:
        async with store.lock("carol", wait_time_in_seconds=0.001):
            served.append(number)
            await asyncio.sleep(0.005)

    # Drawn one after another (each task draws its ticket before its first await).
    await asyncio.gather(*(turn(n) for n in range(5)))
    assert served == [0, 1, 2, 3, 4]


async def test_a_ticket_abandoned_by_a_dead_process_expires(store_at: str) -> None:
    store = make_store(store_at)
    store.issue_ticket("dave", lock_lifetime=0.2)  # its holder never finishes
    started = time.monotonic()
    async with store.lock("dave", wait_time_in_seconds=0.02):
        waited = time.monotonic() - started
    assert 0.15 < waited < 5


def test_rasa_builds_it_from_the_endpoints_and_allows_several_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = EndpointConfig.from_dict(
        {"type": "bot.lock_store.SQLiteLockStore", "path": str(tmp_path / "locks.db")}
    )
    assert isinstance(LockStore.create(config), SQLiteLockStore)
    monkeypatch.setenv("SANIC_WORKERS", "2")
    assert number_of_sanic_workers(config) == 2
    scale = yaml.safe_load((PROJECT_ROOT / "bot" / "endpoints.scale.yml").read_text())["lock_store"]
    scale = {**scale, "url": "127.0.0.1", "port": 6379}
    redis_store = LockStore.create(EndpointConfig.from_dict(scale))
    assert isinstance(redis_store, AtomicRedisLockStore)
    assert redis_store.key_prefix == "parley:lock:"
    assert number_of_sanic_workers(EndpointConfig.from_dict(scale)) == 2
    with pytest.raises(ValueError, match="path"):
        SQLiteLockStore()
