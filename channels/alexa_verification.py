"""Is this request really from Alexa? Amazon's checks for a skill hosted as a web service.

Alexa signs every request it sends to a skill's endpoint. A request is accepted only if:
- its `SignatureCertChainUrl` is an Amazon certificate URL: https, host s3.amazonaws.com
  (any case), port 443 if one is given, and a path that still starts with `/echo.api/`
  once normalised (`/echo.api/../x` does not);
- the PEM chain found there starts with a signing certificate valid at this moment, made
  out to `echo-api.amazon.com`, that chains through the other certificates to a root in
  the trust store (a PEM bundle: certifi's by default, a generated one in tests);
- `Signature-256` is the base64 RSA PKCS#1 v1.5 SHA-256 signature of the raw body by
  that certificate's key;
- `request.timestamp` is within 150 seconds of now (older requests are replays);
- it is for this skill, when the skill id is configured.

Failures are values (`VerificationFailed` with a reason an operator can act on); the
channel answers them with HTTP 400, as Amazon expects. The certificate chain comes
through an injectable fetcher: `CachedChainFetcher(HttpChainFetcher())` in production,
an in-memory one in tests, so no test touches the network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import posixpath
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from bot.clock import Clock, system_clock

CERT_CHAIN_URL_HEADER = "SignatureCertChainUrl"
SIGNATURE_HEADER = "Signature-256"
CERT_URL_HOST = "s3.amazonaws.com"
CERT_URL_PATH_PREFIX = "/echo.api/"
CERT_URL_PORT = 443
SIGNING_DOMAIN = "echo-api.amazon.com"
# Amazon: "the request timestamp must be within 150 seconds of the current time".
TIMESTAMP_TOLERANCE = timedelta(seconds=150)
# Amazon's chain is a few kilobytes; anything much bigger is not it.
MAX_CHAIN_BYTES = 64 * 1024

ChainFetcher = Callable[[str], Awaitable[bytes]]


@dataclass(frozen=True)
class VerificationFailed:
    """The request is refused; `reason` says why, for the operator's log."""

    reason: str


@dataclass(frozen=True)
class VerifiedRequest:
    """A request Alexa sent, for this skill, just now: its parsed JSON envelope."""

    envelope: dict[str, Any]


class ChainUnavailable(Exception):
    """The certificate chain could not be fetched (network, status, size)."""


def cert_url_problem(url: str) -> str | None:
    """What is wrong with a `SignatureCertChainUrl`, or None if Amazon could have sent it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "certificate URL is not a URL"
    if parts.scheme.lower() != "https":
        return "certificate URL is not https"
    if (parts.hostname or "").lower() != CERT_URL_HOST or parts.username or parts.password:
        return f"certificate URL host is not {CERT_URL_HOST}"
    if port is not None and port != CERT_URL_PORT:
        return f"certificate URL port is not {CERT_URL_PORT}"
    path = posixpath.normpath(unquote(parts.path)) if parts.path else ""
    if not path.startswith(CERT_URL_PATH_PREFIX):
        return f"certificate URL path does not start with {CERT_URL_PATH_PREFIX}"
    return None


def load_trust_roots(bundle: Path | None = None) -> list[x509.Certificate]:
    """The root certificates of a PEM bundle (default: certifi's, the public web roots).

    Raises (OSError, ValueError) on a missing or unreadable bundle: a misconfigured trust
    store stops the server at startup instead of refusing every request later.
    """
    path = bundle if bundle is not None else Path(certifi.where())
    with warnings.catch_warnings():
        # A few public roots have serial numbers RFC 5280 disallows; they load all the same.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        roots = x509.load_pem_x509_certificates(path.read_bytes())
    if not roots:
        raise ValueError(f"{path}: no certificates")
    return roots


class HttpChainFetcher:
    """Downloads a certificate chain: short timeout, no redirects, at most `max_bytes`."""

    def __init__(self, timeout: float = 5.0, max_bytes: int = MAX_CHAIN_BYTES) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_bytes

    async def __call__(self, url: str) -> bytes:
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.get(url, allow_redirects=False) as response,
            ):
                if response.status != 200:
                    raise ChainUnavailable(f"HTTP {response.status}")
                if (response.content_length or 0) > self._max_bytes:
                    raise ChainUnavailable("too large")
                body = bytearray()
                async for chunk in response.content.iter_chunked(8192):
                    body += chunk
                    if len(body) > self._max_bytes:
                        raise ChainUnavailable("too large")
                return bytes(body)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise ChainUnavailable(type(error).__name__) from error


class CachedChainFetcher:
    """Keeps each fetched chain for `ttl`, by URL; failures are not kept.

    Amazon rotates its signing certificate by publishing it at a new URL, so a chain
    is fetched about once per rotation, not once per request. At most `max_entries`
    URLs are kept (the oldest goes first): only Amazon's URLs pass the URL check, and
    only real chains are cached, but the cache stays bounded whatever arrives.
    """

    def __init__(
        self,
        fetch: ChainFetcher,
        clock: Clock = system_clock,
        ttl: timedelta = timedelta(hours=1),
        max_entries: int = 16,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._entries: dict[str, tuple[datetime, bytes]] = {}

    async def __call__(self, url: str) -> bytes:
        now = self._clock()
        cached = self._entries.get(url)
        if cached is not None and cached[0] > now:
            return cached[1]
        chain = await self._fetch(url)
        self._entries.pop(url, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[url] = (now + self._ttl, chain)
        return chain


def _timestamp(envelope: dict[str, Any]) -> datetime | None:
    value = lookup(envelope, "request", "timestamp")
    if not isinstance(value, str):
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def lookup(data: object, *path: str) -> Any:
    """`data[path[0]][path[1]]...`, or None where a step is missing or not an object."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def application_ids(envelope: dict[str, Any]) -> set[str]:
    """The skill ids the request names (context.System and session both carry one)."""
    found = (
        lookup(envelope, "context", "System", "application", "applicationId"),
        lookup(envelope, "session", "application", "applicationId"),
    )
    return {value for value in found if isinstance(value, str)}


class AlexaRequestVerifier:
    """Checks each request as Amazon requires; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        trust_roots: Sequence[x509.Certificate],
        fetch_chain: ChainFetcher,
        skill_id: str | None = None,
        clock: Clock = system_clock,
        tolerance: timedelta = TIMESTAMP_TOLERANCE,
    ) -> None:
        self._store = Store(list(trust_roots))
        self._fetch_chain = fetch_chain
        self._skill_id = skill_id
        self._clock = clock
        self._tolerance = tolerance

    async def verify(
        self, headers: Mapping[str, str], body: bytes
    ) -> VerifiedRequest | VerificationFailed:
        lowered = {name.lower(): value for name, value in headers.items()}
        cert_url = lowered.get(CERT_CHAIN_URL_HEADER.lower())
        signature_b64 = lowered.get(SIGNATURE_HEADER.lower())
        if not cert_url:
            return VerificationFailed(f"no {CERT_CHAIN_URL_HEADER} header")
        if not signature_b64:
            return VerificationFailed(f"no {SIGNATURE_HEADER} header")
        problem = cert_url_problem(cert_url)
        if problem:
            return VerificationFailed(problem)
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except (binascii.Error, ValueError):
            return VerificationFailed(f"{SIGNATURE_HEADER} is not base64")

        try:
            envelope = json.loads(body)
        except ValueError:
            return VerificationFailed("body is not JSON")
        if not isinstance(envelope, dict) or not isinstance(envelope.get("request"), dict):
            return VerificationFailed("body is not an Alexa request")
        now = self._clock()
        sent = _timestamp(envelope)
        if sent is None:
            return VerificationFailed("request.timestamp is missing or not ISO 8601 with a zone")
        if abs(now - sent) > self._tolerance:
            seconds = int(self._tolerance.total_seconds())
            return VerificationFailed(f"request.timestamp is more than {seconds} s from now")
        if self._skill_id is not None and application_ids(envelope) != {self._skill_id}:
            return VerificationFailed("request is for another skill")

        try:
            pem = await self._fetch_chain(cert_url)
        except ChainUnavailable as error:
            return VerificationFailed(f"certificate chain could not be fetched: {error}")
        try:
            chain = x509.load_pem_x509_certificates(pem)
        except ValueError:
            return VerificationFailed("certificate chain is not PEM")
        signing, intermediates = chain[0], chain[1:]
        failure = self._check_signing_certificate(signing, intermediates, now)
        if failure is not None:
            return failure

        public_key = signing.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            return VerificationFailed("signing certificate key is not RSA")
        try:
            public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return VerificationFailed("signature does not match the body")
        return VerifiedRequest(envelope)

    def _check_signing_certificate(
        self, signing: x509.Certificate, intermediates: list[x509.Certificate], now: datetime
    ) -> VerificationFailed | None:
        # The chain check below covers these too; doing them first names the problem.
        if now < signing.not_valid_before_utc:
            return VerificationFailed("signing certificate is not valid yet")
        if now > signing.not_valid_after_utc:
            return VerificationFailed("signing certificate has expired")
        try:
            san = signing.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = san.value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        except ValueError:  # a malformed extension
            return VerificationFailed("signing certificate cannot be read")
        if SIGNING_DOMAIN not in names:
            return VerificationFailed(f"signing certificate is not made out to {SIGNING_DOMAIN}")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .build_server_verifier(x509.DNSName(SIGNING_DOMAIN))
        )
        try:
            verifier.verify(signing, intermediates)
        except VerificationError as error:
            return VerificationFailed(f"certificate chain is not trusted: {error}")
        return None
