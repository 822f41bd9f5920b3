"""Handing an e-mail to an SMTP server (aiosmtplib): a provider's submission endpoint
(STARTTLS or TLS, with authentication), or the local mail sink on loopback.

The answer is one of four: accepted (the server's reply), refused for good (a 5xx:
no such mailbox, policy; the e-mail was not taken and sending it again will not help),
not reached (the connection failed, timed out, or the server said 4xx: try later;
nothing was taken), or in doubt (the server went silent while it had the e-mail).

The e-mail goes in two steps (`_Connections`): the sender, the recipient, DATA and the
whole e-mail but its final line "." (until which the server keeps nothing), then the
final "." of every e-mail of the round, written at once inside `handing_over`'s mark,
whose commit is written right after them with nothing awaited in between. A sender that
stops before the commit reached the database has its mark undone (the e-mails are still
`queued`: a stop before the final lines delivered nothing); one that stops after it
had written both, and the system sends what was written even as the process dies: the
record says `sending` exactly when the final lines went, but for the microseconds
between the two writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.typing import SMTPStatus

from backend.core.settings import Settings


class MailRefused(Exception):
    """The server refused the e-mail for good (a 5xx reply)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


class MailUnavailable(Exception):
    """The server could not be reached, or asked to try later (4xx): nothing was sent."""


class MailInDoubt(Exception):
    """The connection failed while the server had the e-mail, before it answered."""


class NotOurs(Exception):
    """Another sender took the e-mail over (its record says so): not sent from here."""


@dataclass(frozen=True)
class Mailer:
    host: str
    port: int
    security: str  # starttls, tls or none
    user: str | None = None
    password: str | None = None
    timeout: float = 30.0
    # Connections open at once: providers cap how many one sender may hold. One group
    # of e-mails at a time holds them (batches sent side by side take turns).
    connections: int = 16
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        host, port, security = settings.resolved_smtp
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            host, port, security, settings.smtp_user if settings.smtp_host else None,
            password if settings.smtp_host else None, settings.smtp_timeout_seconds,
            settings.smtp_connections,
        )  # fmt: skip

    async def send_all(
        self,
        envelopes: Sequence[Envelope],
        handing_over: Callable[[list[int]], AbstractAsyncContextManager[Collection[int]]],
    ) -> list[Answer]:
        """Hand over many e-mails on up to `connections` connections, each kept for
        the next e-mail (as mail servers expect of a sender): the server's reply to
        each, or why it was not taken. E-mails go in rounds, one per connection;
        `handing_over` is given the indexes of a round's e-mails the server is ready to
        take, and opens the mark of those this sender may end (the others were taken over
        by another sender, and are abandoned); their ends are written inside it, and the
        mark is kept (committed) as it closes."""
        answers: list[Answer | None] = [None] * len(envelopes)
        async with self._turn, _Connections(self) as connections:
            for start in range(0, len(envelopes), self.connections):
                round_ = list(range(start, min(start + self.connections, len(envelopes))))
                opened = await asyncio.gather(
                    *(connections.envelope(slot, envelopes[i]) for slot, i in enumerate(round_))
                )
                ready = [(slot, i) for slot, i in enumerate(round_) if opened[slot] is None]
                for slot, i in enumerate(round_):
                    answers[i] = opened[slot]
                if ready:
                    async with handing_over([i for _, i in ready]) as marked:
                        ours = set(marked)
                        for slot, i in ready:  # no await: the mark commits right after
                            if i in ours:
                                connections.end(slot)
                            else:  # closed without its end: the server keeps nothing
                                connections.abandon(slot)
                                answers[i] = NotOurs("another sender took this e-mail over")
                    going = [(slot, i) for slot, i in ready if i in ours]
                    delivered = await asyncio.gather(
                        *(connections.answer(slot) for slot, _ in going)
                    )
                    for (_, i), answer in zip(going, delivered, strict=True):
                        answers[i] = answer
        assert all(a is not None for a in answers)
        return [a for a in answers if a is not None]

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host, port=self.port, use_tls=self.security == "tls",
            start_tls=self.security == "starttls", username=self.user,
            password=self.password, timeout=self.timeout,
        )  # fmt: skip


class _Connections:
    """The connections of one `send_all`, by slot: opened when first needed, kept for
    the slot's next e-mail, opened again after a failure, closed (QUIT) at the end."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer
        self.open: dict[int, aiosmtplib.SMTP] = {}

    async def __aenter__(self) -> _Connections:
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(_close(c) for c in self.open.values()))

    async def envelope(self, slot: int, envelope: Envelope) -> MailRefused | MailUnavailable | None:
        """Give the server the sender, the recipient, DATA and the e-mail but its final
        "." on the slot's connection (a kept one found closed by the server is opened
        again, once); None when the server took all of it and awaits the end."""
        for fresh in (slot not in self.open, True):
            client = await self._connection(slot, fresh)
            if isinstance(client, MailUnavailable):
                return client
            try:
                await client.mail(envelope.sender)
                await client.rcpt(envelope.recipient)
                await _all_but_the_end(client, envelope.raw, self.mailer.timeout)
                return None
            except aiosmtplib.SMTPResponseException as error:
                with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                    await client.rset()  # the connection serves the next e-mail
                return _classified(error.code, error.message)
            except (aiosmtplib.SMTPException, OSError) as error:
                self._drop(slot)
                if fresh:
                    return MailUnavailable(f"{type(error).__name__}: {error}")
        raise AssertionError("unreachable")  # pragma: no cover

    def abandon(self, slot: int) -> None:
        """Close the connection in the middle of its e-mail: the server drops it."""
        self._drop(slot)

    def end(self, slot: int) -> None:
        """The e-mail's final ".": from here the server has it."""
        protocol = self.open[slot].protocol
        assert protocol is not None
        protocol._response_pending = True  # as aiosmtplib marks a reply as expected
        protocol.write(b".\r\n")

    async def answer(self, slot: int) -> str | MailRefused | MailUnavailable | MailInDoubt:
        """The server's answer to the e-mail just ended."""
        protocol = self.open[slot].protocol
        try:
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("the connection was lost")
            response = await protocol.read_response(timeout=self.mailer.timeout)
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop(slot)
            return MailInDoubt(f"{type(error).__name__}: {error}")
        if response.code != SMTPStatus.completed:
            return _classified(response.code, response.message)
        return response.message

    async def _connection(self, slot: int, fresh: bool) -> aiosmtplib.SMTP | MailUnavailable:
        if not fresh and slot in self.open:
            return self.open[slot]
        self._drop(slot)
        client = self.mailer.client()
        try:
            await client.connect()
        except (aiosmtplib.SMTPException, OSError) as error:
            return MailUnavailable(f"{type(error).__name__}: {error}")
        self.open[slot] = client
        return client

    def _drop(self, slot: int) -> None:
        if (client := self.open.pop(slot, None)) is not None:
            client.close()


async def _all_but_the_end(client: aiosmtplib.SMTP, raw: bytes, timeout: float) -> None:
    """DATA, then the e-mail as aiosmtplib's own `data` sends it (line ends as CRLF,
    lines starting with "." doubled), but not the final "." line: aiosmtplib's
    `SMTPProtocol.execute_data_command` in two halves, the second being `end`. Raises
    what `data` raises."""
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("the connection was lost")
    body = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(raw))
    protocol._response_pending = True
    protocol.write(b"DATA\r\n")
    started = await protocol.read_response(timeout=timeout)
    if started.code != SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(started.code, started.message)
    protocol.write(body)


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()
    client.close()


# The server's reply to an e-mail, or why it was not taken.
Answer = str | MailRefused | MailUnavailable | MailInDoubt | NotOurs


@dataclass(frozen=True)
class Envelope:
    raw: bytes  # the e-mail as it goes, signed
    sender: str
    recipient: str


def _classified(code: int, text: str) -> MailRefused | MailUnavailable:
    if 500 <= code < 600:
        return MailRefused(code, text)
    return MailUnavailable(f"{code} {text}")
