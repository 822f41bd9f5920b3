"""Alexa requests signed the way Amazon signs them, by a certificate chain made here.

`make_pki()` generates a root CA, an intermediate CA and a signing key; `leaf()` issues
the signing certificate (made out to echo-api.amazon.com unless told otherwise). Tests
trust the generated root (PARLEY_ALEXA_TRUST_ROOT or `trust_roots=`) and serve the chain
from `FakeS3`, the fetcher the verifier is given instead of HTTPS.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from channels.alexa_verification import ChainUnavailable

NOW = datetime(2031, 3, 14, 9, 26, 53, tzinfo=timezone.utc)
CERT_URL = "https://s3.amazonaws.com/echo.api/echo-api-cert-12.pem"
SKILL_ID = "amzn1.ask.skill.11111111-2222-3333-4444-555555555555"
USER_ID = "amzn1.ask.account.AGENERATEDTESTUSER"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: str,
    issuer_key: rsa.RSAPrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    dns_names: tuple[str, ...] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(_serial(subject, issuer, not_before, not_after, dns_names))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _serial(*facts: object) -> int:
    """The same certificate facts give the same serial, hence the same certificate bytes."""
    return int.from_bytes(hashlib.sha256(repr(facts).encode()).digest()[:16], "big") >> 1


def pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@dataclass(frozen=True)
class GeneratedPki:
    """Root CA -> intermediate CA -> signing certificate, all RSA 2048 and SHA-256."""

    name: str
    root: x509.Certificate
    intermediate: x509.Certificate
    intermediate_key: rsa.RSAPrivateKey
    signing_key: rsa.RSAPrivateKey

    def leaf(
        self,
        *,
        dns_names: tuple[str, ...] = ("echo-api.amazon.com",),
        not_before: datetime = NOW - timedelta(days=30),
        not_after: datetime = NOW + timedelta(days=300),
    ) -> x509.Certificate:
        return _certificate(
            "echo-api.amazon.com",
            self.signing_key,
            f"{self.name} intermediate",
            self.intermediate_key,
            ca=False,
            not_before=not_before,
            not_after=not_after,
            dns_names=dns_names,
        )

    def chain(self, leaf: x509.Certificate | None = None) -> bytes:
        """The PEM file Amazon publishes: signing certificate first, then the CA's."""
        return pem(leaf or self.leaf(), self.intermediate)

    def trust_bundle(self, directory: Path) -> Path:
        path = directory / f"{self.name.replace(' ', '-')}-root.pem"
        path.write_bytes(pem(self.root))
        return path


@cache
def make_pki(name: str = "Test Amazon") -> GeneratedPki:
    root_key, intermediate_key = _key(), _key()
    years = timedelta(days=3650)
    root = _certificate(
        f"{name} root",
        root_key,
        f"{name} root",
        root_key,
        ca=True,
        not_before=NOW - years,
        not_after=NOW + years,
    )
    intermediate = _certificate(
        f"{name} intermediate",
        intermediate_key,
        f"{name} root",
        root_key,
        ca=True,
        not_before=NOW - years,
        not_after=NOW + years,
    )
    return GeneratedPki(name, root, intermediate, intermediate_key, _key())


@dataclass
class FakeS3:
    """Serves certificate chains by URL, as Amazon's bucket would; records each fetch."""

    chains: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if url not in self.chains:
            raise ChainUnavailable("HTTP 404")
        return self.chains[url]


def timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    request: dict[str, Any],
    *,
    at: datetime = NOW,
    user_id: str = USER_ID,
    skill_id: str = SKILL_ID,
    new_session: bool = False,
) -> dict[str, Any]:
    """A request envelope as Alexa sends it (ASK request format, version 1.0)."""
    application = {"applicationId": skill_id}
    user = {"userId": user_id}
    return {
        "version": "1.0",
        "session": {
            "new": new_session,
            "sessionId": "amzn1.echo-api.session.0000-test",
            "application": application,
            "attributes": {},
            "user": user,
        },
        "context": {
            "System": {
                "application": application,
                "user": user,
                "device": {"deviceId": "amzn1.ask.device.TEST", "supportedInterfaces": {}},
                "apiEndpoint": "https://api.amazonalexa.com",
            }
        },
        "request": {
            "requestId": "amzn1.echo-api.request.0000-test",
            "timestamp": timestamp(at),
            "locale": "en-US",
            **request,
        },
    }


def launch() -> dict[str, Any]:
    return {"type": "LaunchRequest"}


def intent(name: str, query: str | None = None) -> dict[str, Any]:
    slots = {}
    if name == "CatchAllIntent":
        slots["query"] = {"name": "query", "confirmationStatus": "NONE"}
        if query is not None:
            slots["query"]["value"] = query
    return {
        "type": "IntentRequest",
        "dialogState": "STARTED",
        "intent": {"name": name, "confirmationStatus": "NONE", "slots": slots},
    }


def session_ended(reason: str = "USER_INITIATED") -> dict[str, Any]:
    return {"type": "SessionEndedRequest", "reason": reason}


def body_of(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope).encode()


def sign(body: bytes, key: rsa.RSAPrivateKey) -> str:
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def signed_headers(body: bytes, key: rsa.RSAPrivateKey, cert_url: str = CERT_URL) -> dict[str, str]:
    """The headers Alexa sends: where its certificate chain is, and the body's signature."""
    return {
        "Content-Type": "application/json; charset=utf-8",
        "SignatureCertChainUrl": cert_url,
        "Signature-256": sign(body, key),
    }
