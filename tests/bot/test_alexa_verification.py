"""Only requests Amazon really sent, for this skill, just now, pass the Alexa checks.

Requests are signed by a certificate chain generated for the test (root -> intermediate
-> echo-api.amazon.com); the verifier trusts that root and fetches the chain from an
in-memory S3, so nothing here touches the network except the loopback HTTP fetcher tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from aiohttp import web

from channels.alexa_verification import (
    MAX_CHAIN_BYTES,
    AlexaRequestVerifier,
    CachedChainFetcher,
    ChainUnavailable,
    HttpChainFetcher,
    VerificationFailed,
    VerifiedRequest,
    cert_url_problem,
    load_trust_roots,
)
from tests.bot.alexa_signing import (
    CERT_URL,
    NOW,
    SKILL_ID,
    FakeS3,
    GeneratedPki,
    body_of,
    envelope,
    intent,
    launch,
    make_pki,
    pem,
    signed_headers,
)


@pytest.fixture(scope="module")
def pki() -> GeneratedPki:
    return make_pki()


@pytest.fixture
def s3(pki: GeneratedPki) -> FakeS3:
    return FakeS3({CERT_URL: pki.chain()})


def verifier_for(
    pki: GeneratedPki, s3: FakeS3, *, skill_id: str | None = SKILL_ID, now: datetime = NOW
) -> AlexaRequestVerifier:
    return AlexaRequestVerifier(
        trust_roots=[pki.root], fetch_chain=s3, skill_id=skill_id, clock=lambda: now
    )


async def refusal(
    verifier: AlexaRequestVerifier, headers: dict[str, str], body: bytes
) -> str | None:
    outcome = await verifier.verify(headers, body)
    return outcome.reason if isinstance(outcome, VerificationFailed) else None


async def test_a_request_signed_by_amazons_chain_is_accepted_with_its_envelope(pki, s3) -> None:
    sent = envelope(intent("CatchAllIntent", "how much is the team plan"))
    body = body_of(sent)

    outcome = await verifier_for(pki, s3).verify(signed_headers(body, pki.signing_key), body)

    assert outcome == VerifiedRequest(sent)
    assert s3.fetched == [CERT_URL]


async def test_header_names_are_matched_whatever_their_case(pki, s3) -> None:
    body = body_of(envelope(launch()))
    headers = {name.lower(): value for name, value in signed_headers(body, pki.signing_key).items()}

    assert await refusal(verifier_for(pki, s3), headers, body) is None


@pytest.mark.parametrize(
    "url",
    [
        "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "https://S3.AMAZONAWS.COM/echo.api/echo-api-cert.pem",
        "HTTPS://s3.amazonaws.com/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem",
        "https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem",
    ],
)
def test_amazons_certificate_urls_pass_the_url_rules(url: str) -> None:
    assert cert_url_problem(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://s3.amazonaws.com/echo.api/echo-api-cert.pem", "not https"),
        ("https://notamazon.com/echo.api/echo-api-cert.pem", "host"),
        ("https://s3.amazonaws.com.evil.example/echo.api/echo-api-cert.pem", "host"),
        ("https://evil.example@s3.amazonaws.com/echo.api/echo-api-cert.pem", "host"),
        ("https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem", "path"),
        ("https://s3.amazonaws.com/invalid.path/echo-api-cert.pem", "path"),
        ("https://s3.amazonaws.com/echo.api/../echo-api-cert.pem", "path"),
        ("https://s3.amazonaws.com/echo.api/%2e%2e/evil/cert.pem", "path"),
        ("https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem", "port"),
        ("https://s3.amazonaws.com:99999/echo.api/echo-api-cert.pem", "not a URL"),
    ],
)
async def test_other_certificate_urls_are_refused_and_never_fetched(
    pki, s3, url: str, reason: str
) -> None:
    body = body_of(envelope(launch()))
    s3.chains[url] = pki.chain()

    refused = await refusal(
        verifier_for(pki, s3), signed_headers(body, pki.signing_key, cert_url=url), body
    )

    assert refused is not None
    assert reason in refused
    assert s3.fetched == []


async def test_an_expired_signing_certificate_is_refused(pki, s3) -> None:
    s3.chains[CERT_URL] = pki.chain(pki.leaf(not_after=NOW - timedelta(seconds=1)))
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "signing certificate has expired"


async def test_a_signing_certificate_not_valid_yet_is_refused(pki, s3) -> None:
    s3.chains[CERT_URL] = pki.chain(pki.leaf(not_before=NOW + timedelta(minutes=5)))
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "signing certificate is not valid yet"


async def test_a_signing_certificate_for_another_domain_is_refused(pki, s3) -> None:
    s3.chains[CERT_URL] = pki.chain(pki.leaf(dns_names=("echo-api.amazon.com.evil.example",)))
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "signing certificate is not made out to echo-api.amazon.com"


async def test_a_chain_that_does_not_lead_to_a_trusted_root_is_refused(pki) -> None:
    # A look-alike chain: same names, its own root, which the verifier does not trust.
    impostor = make_pki("Impostor")
    s3 = FakeS3({CERT_URL: impostor.chain()})
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, impostor.signing_key), body)

    assert refused is not None
    assert refused.startswith("certificate chain is not trusted")


async def test_a_chain_missing_its_intermediate_is_refused(pki, s3) -> None:
    s3.chains[CERT_URL] = pem(pki.leaf())
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused is not None
    assert refused.startswith("certificate chain is not trusted")


async def test_a_chain_that_is_not_pem_is_refused(pki, s3) -> None:
    s3.chains[CERT_URL] = b"<Error><Code>AccessDenied</Code></Error>"
    body = body_of(envelope(launch()))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "certificate chain is not PEM"


async def test_a_chain_that_cannot_be_fetched_is_refused(pki) -> None:
    body = body_of(envelope(launch()))

    refused = await refusal(
        verifier_for(pki, FakeS3()), signed_headers(body, pki.signing_key), body
    )

    assert refused == "certificate chain could not be fetched: HTTP 404"


async def test_a_body_changed_after_signing_is_refused(pki, s3) -> None:
    body = body_of(envelope(intent("CatchAllIntent", "book a demo")))
    headers = signed_headers(body, pki.signing_key)
    tampered = body.replace(b"book a demo", b"stop texting")

    refused = await refusal(verifier_for(pki, s3), headers, tampered)

    assert refused == "signature does not match the body"


async def test_a_signature_by_another_key_is_refused(pki, s3) -> None:
    body = body_of(envelope(launch()))
    forged = signed_headers(body, make_pki("Forger").signing_key)

    assert await refusal(verifier_for(pki, s3), forged, body) == "signature does not match the body"


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("Signature-256", "no Signature-256 header"),
        ("SignatureCertChainUrl", "no SignatureCertChainUrl header"),
    ],
)
async def test_a_request_without_its_signature_headers_is_refused(
    pki, s3, missing: str, reason: str
) -> None:
    body = body_of(envelope(launch()))
    headers = signed_headers(body, pki.signing_key)
    del headers[missing]

    assert await refusal(verifier_for(pki, s3), headers, body) == reason
    assert s3.fetched == []


async def test_only_the_sha256_signature_counts_not_the_old_sha1_header(pki, s3) -> None:
    body = body_of(envelope(launch()))
    headers = signed_headers(body, pki.signing_key)
    headers["Signature"] = headers.pop("Signature-256")

    assert await refusal(verifier_for(pki, s3), headers, body) == "no Signature-256 header"


async def test_a_signature_that_is_not_base64_is_refused(pki, s3) -> None:
    body = body_of(envelope(launch()))
    headers = {**signed_headers(body, pki.signing_key), "Signature-256": "not*base64!"}

    assert await refusal(verifier_for(pki, s3), headers, body) == "Signature-256 is not base64"


@pytest.mark.parametrize("offset", [timedelta(seconds=151), timedelta(seconds=-151)])
async def test_a_request_timestamped_more_than_150_seconds_away_is_refused(
    pki, s3, offset: timedelta
) -> None:
    body = body_of(envelope(launch(), at=NOW + offset))

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "request.timestamp is more than 150 s from now"
    assert s3.fetched == []


@pytest.mark.parametrize("offset", [timedelta(seconds=150), timedelta(seconds=-150)])
async def test_a_request_timestamped_150_seconds_away_is_still_accepted(
    pki, s3, offset: timedelta
) -> None:
    body = body_of(envelope(launch(), at=NOW + offset))

    assert await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body) is None


@pytest.mark.parametrize("stamp", [None, "yesterday", "2031-03-14T09:26:53"])
async def test_a_request_without_a_zoned_iso_timestamp_is_refused(pki, s3, stamp) -> None:
    sent = envelope(launch())
    sent["request"]["timestamp"] = stamp
    body = body_of(sent)

    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused == "request.timestamp is missing or not ISO 8601 with a zone"


async def test_a_request_for_another_skill_is_refused_when_the_skill_id_is_set(pki, s3) -> None:
    body = body_of(envelope(launch(), skill_id="amzn1.ask.skill.someone-elses"))
    headers = signed_headers(body, pki.signing_key)

    assert await refusal(verifier_for(pki, s3), headers, body) == "request is for another skill"
    assert await refusal(verifier_for(pki, s3, skill_id=None), headers, body) is None


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"version": "1.0"}'])
async def test_a_body_that_is_not_an_alexa_request_is_refused(pki, s3, body: bytes) -> None:
    refused = await refusal(verifier_for(pki, s3), signed_headers(body, pki.signing_key), body)

    assert refused in {"body is not JSON", "body is not an Alexa request"}


async def test_a_chain_is_fetched_once_and_again_after_it_expires_from_the_cache(pki, s3) -> None:
    now = [NOW]
    cached = CachedChainFetcher(s3, clock=lambda: now[0], ttl=timedelta(hours=1))
    verifier = AlexaRequestVerifier(
        trust_roots=[pki.root], fetch_chain=cached, skill_id=SKILL_ID, clock=lambda: now[0]
    )

    async def verified_at(moment: datetime) -> bool:
        now[0] = moment
        body = body_of(envelope(launch(), at=moment))
        return await refusal(verifier, signed_headers(body, pki.signing_key), body) is None

    assert await verified_at(NOW)
    assert await verified_at(NOW + timedelta(minutes=59))
    assert s3.fetched == [CERT_URL]
    assert await verified_at(NOW + timedelta(minutes=61))
    assert s3.fetched == [CERT_URL, CERT_URL]


async def test_a_failed_fetch_is_not_cached_and_the_cache_stays_bounded(pki) -> None:
    s3 = FakeS3()
    cached = CachedChainFetcher(s3, clock=lambda: NOW, max_entries=2)

    with pytest.raises(ChainUnavailable):
        await cached(CERT_URL)
    s3.chains[CERT_URL] = pki.chain()
    assert await cached(CERT_URL) == pki.chain()

    for n in range(3):
        s3.chains[f"{CERT_URL}?{n}"] = pki.chain()
        await cached(f"{CERT_URL}?{n}")
    s3.fetched.clear()
    await cached(CERT_URL)  # pushed out by the newer ones: fetched again
    assert s3.fetched == [CERT_URL]


def test_the_default_trust_store_is_certifis_public_roots() -> None:
    roots = load_trust_roots()

    assert len(roots) > 50
    assert any("Amazon Root CA 1" in root.subject.rfc4514_string() for root in roots)


def test_a_trust_root_file_without_certificates_stops_startup(tmp_path) -> None:
    empty = tmp_path / "roots.pem"
    empty.write_text("not a certificate\n")

    with pytest.raises(ValueError, match=r"no certificates|Unable to load"):
        load_trust_roots(empty)
    with pytest.raises(OSError):
        load_trust_roots(tmp_path / "missing.pem")


# The HTTP fetcher against a real server on loopback.


@pytest.fixture
async def chain_server(pki) -> AsyncIterator[str]:
    async def chain(request: web.Request) -> web.Response:
        return web.Response(body=pki.chain(), content_type="application/x-pem-file")

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # no Content-Length: the size shows while reading
        await response.prepare(request)
        for _ in range(MAX_CHAIN_BYTES // 1024 + 2):
            await response.write(b"A" * 1024)
        return response

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/chain.pem")

    app = web.Application()
    app.router.add_get("/chain.pem", chain)
    app.router.add_get("/huge.pem", huge)
    app.router.add_get("/moved.pem", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_http_fetcher_returns_the_chain(chain_server, pki) -> None:
    assert await HttpChainFetcher()(f"{chain_server}/chain.pem") == pki.chain()


@pytest.mark.parametrize(
    ("path", "reason"),
    [("/huge.pem", "too large"), ("/moved.pem", "HTTP 302"), ("/missing.pem", "HTTP 404")],
)
async def test_the_http_fetcher_refuses_big_bodies_redirects_and_errors(
    chain_server, path: str, reason: str
) -> None:
    with pytest.raises(ChainUnavailable, match=reason):
        await HttpChainFetcher()(f"{chain_server}{path}")


async def test_the_http_fetcher_gives_up_on_a_server_that_is_not_there() -> None:
    with pytest.raises(ChainUnavailable, match="ClientConnectorError"):
        await HttpChainFetcher(timeout=2)("http://127.0.0.1:9/chain.pem")
