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
from dataclasses import dataclass

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
    # Connections open at once: providers cap how many one sender may hold.
    connections: int = 16

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
        """Hand over many e-mails, `connections` at a time, each on a connection of its
        own: the server's reply to each, or why it was not taken. `handing_over` is
        given the indexes of the e-mails whose recipients the server accepted, once for
        each group, before their contents go."""
        answers: list[str | MailRefused | MailUnavailable | MailInDoubt] = []
        for start in range(0, len(envelopes), self.connections):
            group = envelopes[start : start + self.connections]
            async with contextlib.AsyncExitStack() as stack:
                opened = await asyncio.gather(*(self._open(stack, e) for e in group))
                ready = [i for i, o in enumerate(opened) if isinstance(o, aiosmtplib.SMTP)]
                if ready:
                    await handing_over([start + i for i in ready])
                answers += await asyncio.gather(
                    *(
                        self._deliver(o, e.raw) if isinstance(o, aiosmtplib.SMTP) else _done(o)
                        for o, e in zip(opened, group, strict=True)
                    )
                )
        return answers

    async def _open(
        self, stack: contextlib.AsyncExitStack, envelope: Envelope
    ) -> aiosmtplib.SMTP | MailRefused | MailUnavailable:
        """A connection whose server accepted the sender and the recipient."""
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, use_tls=self.security == "tls",
            start_tls=self.security == "starttls", username=self.user,
            password=self.password, timeout=self.timeout,
        )  # fmt: skip
        try:
            await stack.enter_async_context(client)
            await client.mail(envelope.sender)
            await client.rcpt(envelope.recipient)
        except aiosmtplib.SMTPResponseException as error:
            return _classified(error.code, error.message)
        except (aiosmtplib.SMTPException, OSError) as error:
            return MailUnavailable(f"{type(error).__name__}: {error}")
        return client

    async def _deliver(
        self, client: aiosmtplib.SMTP, raw: bytes
    ) -> str | MailRefused | MailUnavailable | MailInDoubt:
        try:
            return (await client.data(raw)).message
        except aiosmtplib.SMTPResponseException as error:
            return _classified(error.code, error.message)
        except (aiosmtplib.SMTPException, OSError) as error:
            return MailInDoubt(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Envelope:
    raw: bytes  # the e-mail as it goes, signed
    sender: str
    recipient: str


async def _done(answer: MailRefused | MailUnavailable) -> MailRefused | MailUnavailable:
    return answer


def _classified(code: int, text: str) -> MailRefused | MailUnavailable:
    if 500 <= code < 600:
        return MailRefused(code, text)
    return MailUnavailable(f"{code} {text}")
