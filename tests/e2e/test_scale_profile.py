"""`parley run --profile scale` on this machine's Redis and RabbitMQ and a PostgreSQL
server of the suite's own (tests/e2e/fault_stack.py: it can be crashed without touching
the other tests' databases): two Rasa replicas (and two of each other process) behind
the entry point.

- Conversations whose messages alternate between the replicas are stored whole and in
  order, by Rasa and by the backend (through RabbitMQ and the events consumer).
- A replica killed in the middle of a load loses no message it acknowledged, the other
  serves on, and the killed one is started again.
- The events consumer killed in the middle of a burst: once started again, the backend
  holds every event of every conversation exactly once, in order.
- PostgreSQL crashed and started again under load: meanwhile the backend answers 503
  with a problem body (never a 500), it answers again within 5 s of PostgreSQL's return,
  and every event it accepted is stored.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import requests

from tests.e2e.conftest import PARLEY, ROOT, wait_until_up
from tests.e2e.fault_stack import PostgresMissing, PrivatePostgres
from tests.servers import RABBITMQ_URL, free_port, server_missing

SCRIPT = ["hi", "my name is Dana", "how much does the Team plan cost", "compare Starter and Team"]


@dataclass
class Scale:
    process: subprocess.Popen[bytes]
    log: Path
    rasa: str
    backend: str
    token: str
    database: str
    postgres: PrivatePostgres
    env: dict[str, str]
    admin_token: str = field(default="", repr=False)

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

    def turns(self, sender: str) -> list[tuple[str, str]]:
        """What the person and the bot said in Rasa's conversation, in order."""
        response = requests.get(
            f"{self.rasa}/conversations/{sender}/tracker",
            params={"token": self.token, "include_events": "ALL"}, timeout=30,
        )  # fmt: skip
        response.raise_for_status()
        events = response.json()["events"]
        return [(e["event"], e.get("text") or "") for e in events if e["event"] in TURNS]

    def stored(self, senders: list[str], types: tuple[str, ...] = ("user",)) -> dict[str, Any]:
        """The person's messages (or `types` of events, as (type, text)) the backend
        holds (rasa_events), in Rasa's order."""
        rows = self.query(
            "SELECT sender_id, type, coalesce(data->>'text', '') AS text FROM rasa_events "
            "WHERE type = ANY($2::text[]) AND sender_id = ANY($1::text[]) "
            "ORDER BY timestamp, id",
            senders, list(types),
        )  # fmt: skip
        found: dict[str, list[Any]] = {sender: [] for sender in senders}
        for row in rows:
            value = row["text"] if types == ("user",) else (row["type"], row["text"])
            found[row["sender_id"]].append(value)
        return found

    def query(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async def read() -> list[asyncpg.Record]:
            connection = await asyncpg.connect(self.database)
            try:
                return list(await connection.fetch(sql, *args))
            finally:
                await connection.close()

        return asyncio.run(read())

    def record_event(self, key: str, address: str) -> requests.Response | None:
        """An event reported through the entry point; None if no answer came."""
        try:
            return requests.post(
                f"{self.backend}/api/v1/events",
                json={"type": "page_viewed", "identity": {"kind": "sms", "address": address},
                      "idempotency_key": key},
                headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30,
            )  # fmt: skip
        except requests.RequestException:
            return None


TURNS = ("user", "bot")


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
    try:
        PrivatePostgres.bin_dir()
    except PostgresMissing as missing:
        server_missing(str(missing))
    var = tmp_path_factory.mktemp("scale-var")
    name = f"parley_scale_{secrets.token_hex(4)}"
    queue = f"parley.test.{name}"
    # Its own directory, which the postgres user can reach (a test's is root's alone).
    postgres = PrivatePostgres(Path(tempfile.mkdtemp(prefix="parley-scale-pg-")))
    postgres.create()
    base = postgres.url("").rstrip("/")
    ports = {
        n: free_port()
        for n in (
            "BACKEND",
            "RASA",
            "ACTION_SERVER",
            "TWILIO_EMULATOR",
            "MAIL_SINK_SMTP",
            "MAIL_SINK",
        )
    }
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
    running = Scale(
        process, log, rasa=f"http://127.0.0.1:{ports['RASA']}",
        backend=f"http://127.0.0.1:{ports['BACKEND']}", token=token,
        database=f"{base}/{name}", postgres=postgres, env=env,
    )  # fmt: skip
    try:
        wait_until_up(process, running.output, "parley run --profile scale")
        running.admin_token = subprocess.run(
            [str(PARLEY), "token", "create", "--role", "admin", "--name", "scale-e2e"],
            env=env, capture_output=True, text=True, check=True, cwd=ROOT,
        ).stdout.strip()  # fmt: skip
        yield running
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        postgres.destroy()
        _delete_queues([queue, f"{queue}.unreadable"])


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
    replicas = _processes(scale.process.pid, b"bot.rasa_server run")
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


def test_the_events_consumer_killed_mid_burst_stores_every_event_once(scale: Scale) -> None:
    consumers = _processes(scale.process.pid, b"backend consume-events")
    assert len(consumers) == 1, consumers
    senders = [f"consumer-{n}-{secrets.token_hex(3)}" for n in range(12)]

    def kill_the_consumer() -> None:
        time.sleep(1.5)  # the burst is under way: deliveries in hand, not all acknowledged
        os.kill(consumers[0], signal.SIGKILL)

    with ThreadPoolExecutor(1) as killer:
        killed = killer.submit(kill_the_consumer)
        acknowledged = _converse(scale, senders)
        killed.result()
    assert acknowledged == {sender: SCRIPT for sender in senders}
    in_rasa = {sender: scale.turns(sender) for sender in senders}
    assert all(len(turns) > len(SCRIPT) for turns in in_rasa.values())  # the bot answered

    def the_backend_holds_each_once_in_order() -> None:
        assert scale.stored(senders, TURNS) == in_rasa

    _eventually(the_backend_holds_each_once_in_order, 60)
    _eventually(lambda: _assert_in("starting events again", scale.output()))

    def one_consumer_again() -> None:
        assert len(_processes(scale.process.pid, b"backend consume-events")) == 1

    _eventually(one_consumer_again, 10)


PROBLEM = "application/problem+json"


def test_postgresql_restarting_under_load_gets_503_problems_and_loses_no_accepted_event(
    scale: Scale,
) -> None:
    """Event reports and conversations run on while PostgreSQL crashes and is started
    again two seconds later."""
    answers: list[tuple[float, str, requests.Response | None]] = []
    stop = threading.Event()

    def report(client: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            key = f"pg-restart-{client}-{n}-{secrets.token_hex(2)}"
            answer = scale.record_event(key, f"+1415555{client:04d}")
            answers.append((time.monotonic(), key, answer))
            time.sleep(0.05)

    senders = [f"pg-restart-{n}-{secrets.token_hex(3)}" for n in range(6)]

    answered_at: list[float] = []

    def chat() -> dict[str, list[str]]:
        said: dict[str, list[str]] = {sender: [] for sender in senders}
        while not stop.is_set():
            for sender in senders:
                message = SCRIPT[len(said[sender]) % len(SCRIPT)]
                if scale.say(sender, message):
                    said[sender].append(message)
                    answered_at.append(time.monotonic())
        return said

    with ThreadPoolExecutor(5) as pool:
        reporters = [pool.submit(report, client) for client in range(100, 104)]
        chatting = pool.submit(chat)
        time.sleep(3)
        scale.postgres.crash()
        down = time.monotonic()
        time.sleep(2)
        scale.postgres.start()
        back = time.monotonic()
        time.sleep(10)
        stop.set()
        for reporter in reporters:
            reporter.result()
        acknowledged = chatting.result()

    during = [answer for at, _, answer in answers if down <= at <= back]
    assert during, "no event was reported while PostgreSQL was down"
    for _, key, answer in answers:
        assert answer is not None, f"{key}: no answer"
        assert answer.status_code in (200, 503), (key, answer.status_code, answer.text)
        if answer.status_code == 503:
            assert answer.headers["Content-Type"].startswith(PROBLEM), answer.headers
            assert answer.json()["status"] == 503 and answer.headers["Retry-After"]
    assert any(a is not None and a.status_code == 503 for a in during)
    recovered = min(at for at, _, a in answers if at > back and a and a.status_code == 200)
    assert recovered - back <= 5.0, f"the backend answered again {recovered - back:.1f} s later"
    accepted = [key for _, key, answer in answers if answer and answer.status_code == 200]
    stored = scale.query(
        "SELECT idempotency_key FROM events WHERE idempotency_key = ANY($1::text[])", accepted
    )
    assert sorted(row["idempotency_key"] for row in stored) == sorted(accepted)

    # Conversations: every message Rasa acknowledged is in its tracker and, through the
    # queue and the consumer (which waited for the database), in the backend.
    # Rasa answers again once PostgreSQL is back (its pooled connections died with it).
    # A message it could not answer (a 503, channels/rest.py) is said again, and one
    # it took but did not answer may be in the conversation too: acknowledged messages
    # are a subsequence of what the conversation holds.
    assert any(at > back for at in answered_at), "Rasa answered nothing after the restart"
    for sender, messages in acknowledged.items():
        assert _in_order_within(messages, scale.said(sender)), sender

    def the_backend_holds_every_acknowledged_one() -> None:
        stored_messages = scale.stored(senders)
        for sender, messages in acknowledged.items():
            assert _in_order_within(messages, stored_messages[sender]), sender

    _eventually(the_backend_holds_every_acknowledged_one, 60)


def _in_order_within(wanted: list[str], held: list[str]) -> bool:
    remaining = iter(held)
    return all(any(message == h for h in remaining) for message in wanted)


def _processes(root: int, command_part: bytes) -> list[int]:
    """The processes under `root` whose command line holds `command_part`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _in_tree(int(entry.name), root):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if command_part in command:
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
