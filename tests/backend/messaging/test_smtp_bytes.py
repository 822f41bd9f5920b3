"""The two-step SMTP send puts on the wire exactly the bytes aiosmtplib's own `sendmail`
does: it re-implements aiosmtplib's DATA step in two halves (backend/messaging/smtp.py),
so a change in either would show here, before a mail server sees a mangled e-mail.

A bare server on loopback records every byte it receives, from the first command to
QUIT; each e-mail goes once through `Mailer.send_all` and once through aiosmtplib."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection

import aiosmtplib
import pytest

from backend.messaging.smtp import Envelope, Mailer

# The awkward shapes an e-mail's text can take: lines starting with ".", a line that is
# only ".", bare LF and bare CR line ends, no line end at the end, an empty body,
# non-ASCII bytes and a long line.
BODIES = [
    b"Subject: hi\r\n\r\nHello.\r\n",
    b"Subject: dots\r\n\r\n.starts with a dot\r\n.\r\n..two\r\nend\r\n",
    b"Subject: lf\n\nbare line feeds\n.dot after LF\nlast",
    b"Subject: cr\r\rbare carriage returns\r.dot\r",
    b"Subject: empty\r\n\r\n",
    "Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\ncafé ✓ ".encode() + b"x" * 1200 + b"\r\n",
    b".\r\n",
]


class RecordingServer:
    """Answers every command with success and records the raw bytes of each session."""

    def __init__(self) -> None:
        self.sessions: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received = bytearray()
        writer.write(b"220 recorder ESMTP\r\n")
        while line := await reader.readline():
            received += line
            command = line[:4].upper()
            if command == b"EHLO":
                writer.write(b"250-recorder\r\n250 8BITMIME\r\n")
            elif command == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                received += await reader.readuntil(b"\r\n.\r\n")
                writer.write(b"250 2.0.0 queued\r\n")
            elif command == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
        self.sessions.append(bytes(received))
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[RecordingServer, int]]:
    recorder = RecordingServer()
    listening = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield recorder, port


@contextlib.asynccontextmanager
async def all_ours(indexes: list[int]) -> AsyncIterator[Collection[int]]:
    yield indexes


async def until_sessions(recorder: RecordingServer, count: int) -> None:
    for _ in range(200):
        if len(recorder.sessions) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(recorder.sessions)} sessions recorded, {count} expected")


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
async def test_the_two_step_send_writes_what_aiosmtplib_writes(
    server: tuple[RecordingServer, int], body: bytes
) -> None:
    recorder, port = server
    mailer = Mailer("127.0.0.1", port, "none", timeout=5)
    answers = await mailer.send_all(
        [Envelope(body, "news@example.com", "dana@example.org")], all_ours
    )
    assert answers == ["2.0.0 queued"]
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5) as client:
        await client.sendmail("news@example.com", ["dana@example.org"], body)
    await until_sessions(recorder, 2)
    ours, theirs = recorder.sessions
    assert ours == theirs
    assert b"\r\n.\r\n" in ours


async def test_several_emails_on_one_connection_write_what_aiosmtplib_writes(
    server: tuple[RecordingServer, int],
) -> None:
    # One connection kept for the next e-mail: each e-mail's bytes follow the last's.
    recorder, port = server
    mailer = Mailer("127.0.0.1", port, "none", timeout=5, connections=1)
    envelopes = [Envelope(b, "news@example.com", "dana@example.org") for b in BODIES]
    answers = await mailer.send_all(envelopes, all_ours)
    assert answers == ["2.0.0 queued"] * len(BODIES)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=5) as client:
        for body in BODIES:
            await client.sendmail("news@example.com", ["dana@example.org"], body)
    await until_sessions(recorder, 2)
    ours, theirs = recorder.sessions
    assert ours == theirs
    assert ours.count(b"\r\n.\r\n") == len(BODIES)
