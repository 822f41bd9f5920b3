"""E-mails a second through the e-mail door, beside a bare aiosmtplib loop to the same
local mail sink in the same run (target: the door at least half the loop's pace).

The door does what it does for every marketing e-mail: the address's suppression, the
person's consent read and the guards (quiet hours, the frequency cap, with the person's
row locked) in one PostgreSQL transaction that records the message, the receiving
domain's pace, the e-mail built with its footer and unsubscribe headers, SMTP, and the
outcome stored in a second transaction. The loop only hands the same number of ready-made
e-mails to the sink over SMTP. Both run `CONCURRENCY` senders at once against one
`parley mail-sink` process; recipients are spread over `DOMAINS` receiving domains."""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import aiohttp
import aiosmtplib
import asyncpg

from backend import data_files
from backend.consent import email_confirmation, unsubscribe
from backend.consent import ledger as consent
from backend.consent.ledger import Action, Channel, Entry, Purpose, Source
from backend.core import audit
from backend.core.clock import SystemClock
from backend.core.database import create_engine, create_session_factory
from backend.core.identities import IdentityKind
from backend.core.settings import PROJECT_ROOT
from backend.messaging.door import MessagePurpose
from backend.messaging.email_door import EmailDoor, Mailed, OutboundEmail
from backend.messaging.email_message import Sender
from backend.messaging.guards import ContactGuard
from backend.messaging.pacing import SendingPace
from backend.messaging.smtp import Mailer
from backend.people.profiles import ProfileDirectory
from bench import loading
from bench.backend import POSTGRES
from tests.servers import free_port

CONCURRENCY = 16
DOMAINS = 50
ROUNDS = 3
TARGET = 0.5


@dataclass
class EmailMeasured:
    emails: int = 0
    door_per_second: list[float] = field(default_factory=list)
    loop_per_second: list[float] = field(default_factory=list)
    door_p95_ms: list[float] = field(default_factory=list)


def daytime_zone() -> str:
    """A time zone where it is day now: the guards let marketing go."""
    now = datetime.now(UTC)
    for name in ("Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Tokyo",
                 "Asia/Kolkata", "Pacific/Auckland", "Pacific/Honolulu", "Asia/Dubai"):  # fmt: skip
        if 10 <= now.astimezone(ZoneInfo(name)).hour < 19:
            return name
    return "UTC"  # pragma: no cover


async def bench_email(emails: int) -> EmailMeasured:
    result = EmailMeasured(emails=emails)
    smtp_port, http_port = free_port(), free_port()
    env = {**os.environ, "PARLEY_MAIL_SINK_SMTP_PORT": str(smtp_port),
           "PARLEY_MAIL_SINK_PORT": str(http_port), "PARLEY_LOG_LEVEL": "warning"}  # fmt: skip
    sink = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "backend", "mail-sink", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    sink_url = f"http://127.0.0.1:{http_port}/sink/emails"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(sink_url) as answer:
                        if answer.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            for round_ in range(ROUNDS):
                print(f"  round {round_ + 1}: the door…", flush=True)
                rate, p95 = await _door_round(emails, smtp_port)
                result.door_per_second.append(rate)
                result.door_p95_ms.append(p95)
                await http.delete(sink_url)
                print(f"  round {round_ + 1}: the bare loop…", flush=True)
                result.loop_per_second.append(await _loop_round(emails, smtp_port))
                await http.delete(sink_url)
    finally:
        sink.terminate()
        await sink.wait()
    return result


async def _door_round(emails: int, smtp_port: int) -> tuple[float, float]:
    name = f"parley_bench_email_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(POSTGRES)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    try:
        await loading.migrate(url)
        engine = create_engine(url)
        sessions = create_session_factory(engine)
        clock = SystemClock()
        data = PROJECT_ROOT / "data"
        business = data_files.load_business_texts(data)
        directory = ProfileDirectory(clock, data_files.load_scoring(data), b"bench-key")
        zone = daytime_zone()
        addresses = [f"person{n}@domain{n % DOMAINS}.example" for n in range(emails)]
        async with sessions.begin() as session:
            for address in addresses:
                found = await directory.identify(
                    session, kind=IdentityKind.EMAIL, address=address, fields={"timezone": zone}
                )
                for confirm in (False, True):
                    await consent.record(
                        session, found.profile.id,
                        Entry(Channel.EMAIL, Purpose.MARKETING, Action.GRANT, Source.IMPORT,
                              confirm=confirm),
                        clock, audit.SystemActor("bench"),
                    )  # fmt: skip
        door = EmailDoor(
            sessions=sessions, clock=clock, directory=directory,
            guard=ContactGuard(business.follow_ups, business.timezone),
            mailer=Mailer("127.0.0.1", smtp_port, "none"),
            pace=SendingPace(sessions, clock, per_second=1000.0, max_wait=30.0),
            sender=Sender(business.name, business.contact_email or "", business.address or ""),
            public_url="https://parley.example", unsubscribe_key=unsubscribe.signing_key(b"k"),
            confirmation_key=email_confirmation.signing_key(b"k"),
        )  # fmt: skip
        queue: asyncio.Queue[str] = asyncio.Queue()
        for address in addresses:
            queue.put_nowait(address)
        latencies: list[float] = []

        async def sender() -> None:
            while not queue.empty():
                address = queue.get_nowait()
                started = time.perf_counter()
                sent = await door.send(
                    OutboundEmail(to=address, subject="Spring news", text="Our spring release "
                                  "is out.\n\nSee what is new.", purpose=MessagePurpose.MARKETING)
                )  # fmt: skip
                assert isinstance(sent, Mailed) and sent.message.status == "sent", sent
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        elapsed = time.perf_counter() - started
        await engine.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    ordered = sorted(latencies)
    return emails / elapsed, ordered[round(0.95 * (len(ordered) - 1))] * 1000


async def _loop_round(emails: int, smtp_port: int) -> float:
    """The same number of ready-made e-mails, one SMTP connection per e-mail as the door
    opens them, from `CONCURRENCY` senders at once."""
    message = EmailMessage()
    message["From"], message["Subject"] = "Brightdesk <hello@brightdesk.example>", "Spring news"
    message.set_content("Our spring release is out.\n\nSee what is new.")
    message.add_alternative("<p>Our spring release is out.</p>", subtype="html")
    raw = message.as_bytes()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(emails):
        queue.put_nowait(n)

    async def sender() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            await aiosmtplib.send(
                raw, sender="hello@brightdesk.example",
                recipients=[f"person{n}@domain{n % DOMAINS}.example"],
                hostname="127.0.0.1", port=smtp_port, use_tls=False, start_tls=False,
            )  # fmt: skip

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return emails / (time.perf_counter() - started)


def email_table(result: EmailMeasured, machine_line: str) -> str:
    door, loop = (
        statistics.median(result.door_per_second),
        statistics.median(result.loop_per_second),
    )
    ratio = door / loop

    def spread(values: list[float]) -> str:
        return f"{min(values):,.0f}–{max(values):,.0f}"

    return f"""## E-mail: the door beside a bare SMTP loop

{machine_line}

{result.emails:,} marketing e-mails to as many people (consent granted and confirmed,
in a time zone where it is day), {CONCURRENCY} senders at once, recipients over {DOMAINS}
receiving domains, to one `parley mail-sink` process over SMTP on loopback; PostgreSQL.
The door: suppression, consent and the guards with the person's row locked, the message
recorded, the domain's pace, the e-mail built (footer, `List-Unsubscribe`, one-click),
SMTP, the outcome stored. The loop: the same number of ready-made e-mails through
`aiosmtplib.send`, one connection each, as the door's. Medians of {ROUNDS} rounds, the
spread beside them.

| Measure | The door | Bare aiosmtplib loop | Door ÷ loop | Target |
|---|---|---|---|---|
| e-mails per second | {door:,.0f} ({spread(result.door_per_second)}) | {loop:,.0f} ({spread(result.loop_per_second)}) | {ratio:.2f}× | ≥ {TARGET}×: {"met" if ratio >= TARGET else "not met"} |
| one e-mail through the door, p95 | {statistics.median(result.door_p95_ms):,.0f} ms | | | |
"""
