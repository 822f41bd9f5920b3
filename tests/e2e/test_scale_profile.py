"""`parley run --profile scale` on this machine's PostgreSQL, Redis and RabbitMQ: two
Rasa replicas (and two of each other process) behind the entry point.

- Conversations whose messages alternate between the replicas are stored whole and in
  order, by Rasa and by the backend (through RabbitMQ and the events consumer).
- A replica killed in the middle of a load loses no message it acknowledged, the other
  serves on, and the killed one is started again.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import pytest
import requests

from tests.e2e.conftest import PARLEY, ROOT, wait_until_up
from tests.servers import POSTGRES_DSN, RABBITMQ_URL, free_port, server_missing

SCRIPT = ["hi", "my name is Dana", "how much does the Team plan cost", "compare Starter and Team"]


@dataclass
class Scale:
    process: subprocess.Popen[bytes]
    log: Path
    rasa: str
    token: str
    database: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def say(self, sender: str, message: str) -> bool:
        """Whether the message was acknowledged (answered) through the entry point."""
        try:
            response = requests.post(
                f"{self.rasa}/webhooks/rest/webhook",
                json={"sender": sender, "message": message}, timeout=120,
            )  # fmt: skip
        except requests.RequestException:
            return False
        return response.status_code == 200 and bool(response.json())

    def said(self, sender: str) -> list[str]:
        """The person's messages in Rasa's conversation, in order."""
        response = requests.get(
            f"{self.rasa}/conversations/{sender}/tracker",
            params={"token": self.token, "include_events": "ALL"}, timeout=30,
        )  # fmt: skip
        response.raise_for_status()
        return [e["text"] for e in response.json()["events"] if e["event"] == "user"]

    def stored(self, senders: list[str]) -> dict[str, list[str]]:
        """The person's messages the backend holds (rasa_events), in Rasa's order."""

        async def read() -> dict[str, list[str]]:
            connection = await asyncpg.connect(self.database)
            try:
                rows = await connection.fetch(
                    "SELECT sender_id, data->>'text' AS text FROM rasa_events "
                    "WHERE type = 'user' AND sender_id = ANY($1::text[]) "
                    "ORDER BY timestamp, id",
                    senders,
                )
            finally:
                await connection.close()
            found: dict[str, list[str]] = {sender: [] for sender in senders}
            for row in rows:
                found[row["sender_id"]].append(row["text"])
            return found

        return asyncio.run(read())


def _servers_needed() -> None:
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379), ("RabbitMQ", 5672)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        except OSError:
            server_missing(f"{name} is not running on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def scale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scale]:
    _servers_needed()
    var = tmp_path_factory.mktemp("scale-var")
    name = f"parley_scale_{secrets.token_hex(4)}"
    queue = f"parley.test.{name}"
    base = POSTGRES_DSN.rsplit("/", 1)[0]
    ports = {n: free_port() for n in ("BACKEND", "RASA", "ACTION_SERVER", "TWILIO_EMULATOR")}
    token = "scale-rasa-token"
    env = {
        **os.environ,
        "PARLEY_VAR_DIR": str(var),
        **{f"PARLEY_{n}_PORT": str(p) for n, p in ports.items()},
        "PARLEY_RASA_TOKEN": token,
        "PARLEY_DATABASE_URL": f"{base.replace('postgresql', 'postgresql+asyncpg', 1)}/{name}",
        "PARLEY_RASA_TRACKER_STORE_URL": f"{base}/{name}_rasa",
        "PARLEY_EVENTS_QUEUE": queue,
        "PARLEY_LOG_LEVEL": "warning",
    }
    for leaked in ("PARLEY_BACKEND_TOKEN", "PARLEY_TWILIO_API_URL", "PARLEY_PUBLIC_URL",
                   "PARLEY_SECRET_KEY"):  # fmt: skip
        env.pop(leaked, None)
    log = var / "parley-run.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(PARLEY), "run", "--profile", "scale"], env=env, stdout=sink,
            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
    running = Scale(process, log, f"http://127.0.0.1:{ports['RASA']}", token, f"{base}/{name}")
    wait_until_up(process, running.output, "parley run --profile scale")
    try:
        yield running
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        _drop(base, [name, f"{name}_rasa"])
        _delete_queues([queue, f"{queue}.unreadable"])


def _drop(base: str, names: list[str]) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(f"{base}/postgres")
        try:
            for name in names:
                await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


def _delete_queues(names: list[str]) -> None:
    """The test's queues, and the exchange Rasa declared in front of the first."""

    async def delete() -> None:
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for name in names:
                await channel.queue_delete(name)
            await channel.exchange_delete(names[0])  # Rasa's exchange, named after the queue
        finally:
            await connection.close()

    asyncio.run(delete())


def _converse(scale: Scale, senders: list[str]) -> dict[str, list[str]]:
    """Each conversation says the script, one message after another, all at once; the
    messages each acknowledged."""

    def one(sender: str) -> list[str]:
        return [message for message in SCRIPT if scale.say(sender, message)]

    with ThreadPoolExecutor(len(senders)) as pool:
        return dict(zip(senders, pool.map(one, senders), strict=True))


def _eventually(check: object, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            assert callable(check)
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_conversations_across_both_replicas_are_stored_whole_and_in_order(scale: Scale) -> None:
    senders = [f"interleaved-{n}-{secrets.token_hex(3)}" for n in range(8)]
    acknowledged = _converse(scale, senders)
    assert acknowledged == {sender: SCRIPT for sender in senders}
    for sender in senders:
        assert scale.said(sender) == SCRIPT  # Rasa's tracker, through either replica

    def the_backend_holds_them() -> None:
        assert scale.stored(senders) == {sender: SCRIPT for sender in senders}

    _eventually(the_backend_holds_them)


def test_a_replica_killed_mid_load_loses_no_acknowledged_message(scale: Scale) -> None:
    replicas = _rasa_replicas(scale.process.pid)
    assert len(replicas) == 2, replicas
    senders = [f"killed-{n}-{secrets.token_hex(3)}" for n in range(12)]

    def kill_one() -> None:
        time.sleep(2)
        os.kill(replicas[0], signal.SIGKILL)

    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(kill_one)
        acknowledged = _converse(scale, senders)
        killed.result()
    answered = sum(len(messages) for messages in acknowledged.values())
    assert answered >= len(senders) * len(SCRIPT) // 2  # the other replica served on
    for sender, messages in acknowledged.items():
        said = scale.said(sender)
        assert all(message in said for message in messages), (sender, messages, said)

    def the_backend_holds_every_acknowledged_one() -> None:
        stored = scale.stored(senders)
        for sender, messages in acknowledged.items():
            assert all(message in stored[sender] for message in messages), sender

    _eventually(the_backend_holds_every_acknowledged_one)
    # The killed replica is started again.
    _eventually(lambda: _assert_in("starting rasa-", scale.output()), 60)


def _assert_in(text: str, output: str) -> None:
    assert text in output


def _rasa_replicas(root: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _in_tree(int(entry.name), root):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"bot.rasa_server run" in command:
                found.append(int(entry.name))
    return found


def _in_tree(pid: int, root: int) -> bool:
    while pid > 1:
        if pid == root:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False
