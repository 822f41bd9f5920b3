"""Handing an e-mail to an SMTP server (aiosmtplib): a provider's submission endpoint
(STARTTLS or TLS, with authentication), or the local mail sink on loopback.

The answer is one of four: accepted (the server's reply), refused for good (a 5xx:
no such mailbox, policy; the e-mail was not taken and sending it again will not help),
not reached (the connection failed, timed out, or the server said 4xx: try later;
nothing was taken), or in doubt (the server went silent while it had the e-mail).

`handing_over` is called once the server has accepted the sender and the recipient,
just before the e-mail itself goes: until then nothing can have been delivered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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

    @classmethod
    def from_settings(cls, settings: Settings) -> Mailer:
        host, port, security = settings.resolved_smtp
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(
            host, port, security, settings.smtp_user if settings.smtp_host else None,
            password if settings.smtp_host else None, settings.smtp_timeout_seconds,
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
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, use_tls=self.security == "tls",
            start_tls=self.security == "starttls", username=self.user,
            password=self.password, timeout=self.timeout,
        )  # fmt: skip
        handed = False
        try:
            async with client:
                await client.mail(sender)
                await client.rcpt(recipient)
                if handing_over is not None:
                    await handing_over()
                handed = True
                reply = await client.data(raw)
                return reply.message
        except aiosmtplib.SMTPResponseException as error:
            raise _classified(error.code, error.message) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            failed = f"{type(error).__name__}: {error}"
            raise (MailInDoubt(failed) if handed else MailUnavailable(failed)) from error


def _classified(code: int, text: str) -> MailRefused | MailUnavailable:
    if 500 <= code < 600:
        return MailRefused(code, text)
    return MailUnavailable(f"{code} {text}")
