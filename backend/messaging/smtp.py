"""Handing an e-mail to an SMTP server (aiosmtplib): a provider's submission endpoint
(STARTTLS or TLS, with authentication), or the local mail sink on loopback.

The answer is one of four: accepted (the server's reply), refused for good (a 5xx:
no such mailbox, policy; the e-mail was not taken and sending it again will not help),
not reached (the connection failed, timed out, or the server said 4xx: try later;
nothing was taken), or in doubt (the server went silent while it had the e-mail).

`handing_over` is called once the server has accepted the sender and the recipient,
just before the e-mail itself goes: until then nothing can have been delivered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

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

    async def send(
        self,
        raw: bytes,
        sender: str,
        recipient: str,
        handing_over: Callable[[], Awaitable[None]] | None = None,
    ) -> str:
        """Hand over one e-mail (its bytes as signed); the server's reply. Raises
        MailRefused, MailUnavailable or MailInDoubt."""

        async def noted(_: list[int]) -> None:
            if handing_over is not None:
                await handing_over()

        [answer] = await self.send_all([Envelope(raw, sender, recipient)], noted)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def send_all(
        self,
        envelopes: Sequence[Envelope],
        handing_over: Callable[[list[int]], Awaitable[None]],
    ) -> list[str | MailRefused | MailUnavailable | MailInDoubt]:
        """Hand over many e-mails on up to `connections` connections, each kept for
        the next e-mail (as mail servers expect of a sender): the server's reply to
        each, or why it was not taken. E-mails go in rounds, one per connection;
        `handing_over` is given the indexes of a round's e-mails whose recipients the
        server accepted, before their contents go."""
        answers: list[str | MailRefused | MailUnavailable | MailInDoubt | None] = [None] * len(
            envelopes
        )
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
                    await handing_over([i for _, i in ready])
                    delivered = await asyncio.gather(
                        *(connections.deliver(slot, envelopes[i].raw) for slot, i in ready)
                    )
                    for (_, i), answer in zip(ready, delivered, strict=True):
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
        """Give the server the sender and the recipient on the slot's connection (a
        kept one found closed by the server is opened again, once); None when both
        were accepted."""
        for fresh in (slot not in self.open, True):
            client = await self._connection(slot, fresh)
            if isinstance(client, MailUnavailable):
                return client
            try:
                await client.mail(envelope.sender)
                await client.rcpt(envelope.recipient)
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

    async def deliver(
        self, slot: int, raw: bytes
    ) -> str | MailRefused | MailUnavailable | MailInDoubt:
        client = self.open[slot]
        try:
            return (await client.data(raw)).message
        except aiosmtplib.SMTPResponseException as error:
            return _classified(error.code, error.message)
        except (aiosmtplib.SMTPException, OSError) as error:
            self._drop(slot)
            return MailInDoubt(f"{type(error).__name__}: {error}")

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


async def _close(client: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()
    client.close()


@dataclass(frozen=True)
class Envelope:
    raw: bytes  # the e-mail as it goes, signed
    sender: str
    recipient: str


def _classified(code: int, text: str) -> MailRefused | MailUnavailable:
    if 500 <= code < 600:
        return MailRefused(code, text)
    return MailUnavailable(f"{code} {text}")
