"""Requests from Twilio to the backend are checked against what Twilio really sends,
independently of the local emulator: the signature algorithm from Twilio's own
documented examples, real request bodies with their blank fields, and the forgeries an
attacker would try (another content type, another Host, an oversized body)."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote_plus, urlencode

import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from backend.api.keys import SESSIONS
from backend.core.models import Message
from backend.messaging.twilio_routes import MAX_BODY_BYTES, parse_form
from tests.backend.conftest import TWILIO_TOKEN, StartTexting, TextingBackend
from tests.twilio_requests import image_only_mms, incoming_sms, twilio_signature

PERSON = "+14155552671"


# Twilio's documented example (www.twilio.com/docs/usage/webhooks/webhooks-security, and
# the twilio-python test suite): auth token 12345, this URL, these parameters.
DOCUMENTED_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOCUMENTED = [
    ({"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
      "From": "+12349013030", "To": "+18005551212"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="),
    ({"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
      "From": "+14158675309", "To": "+18005551212"}, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
]  # fmt: skip


@pytest.mark.parametrize(("params", "signature"), DOCUMENTED)
def test_twilios_documented_examples_verify_from_the_raw_body(
    params: dict[str, str], signature: str
) -> None:
    assert twilio_signature("12345", DOCUMENTED_URL, list(params.items())) == signature
    # As it arrives: form-encoded in whatever order Twilio chooses, "+" as %2B.
    body = urlencode(list(reversed(params.items()))).encode()
    form = parse_form(body)
    assert form is not None and dict(form) == params
    assert RequestValidator("12345").validate(DOCUMENTED_URL, form, signature)
    tampered = parse_form(body.replace(b"Digits=1234", b"Digits=1235"))
    assert not RequestValidator("12345").validate(DOCUMENTED_URL, tampered, signature)


def test_blank_fields_are_kept_because_twilio_signs_them() -> None:
    # An image-only MMS as Twilio posts it: Body is blank, and so are the geographic
    # fields Twilio could not fill in.
    params = image_only_mms("MM" + "1" * 32, PERSON)
    signature = twilio_signature("12345", DOCUMENTED_URL, params)
    form = parse_form(urlencode(params).encode())
    assert form is not None and form["Body"] == "" and form["ToCity"] == ""
    assert RequestValidator("12345").validate(DOCUMENTED_URL, form, signature)


def test_invalid_utf8_is_not_a_form() -> None:
    assert parse_form(b"Body=%FF%FE") is None
    assert parse_form(b"\xff\xfe=1") is None


# ------------------------------------------------------------------- against the app


async def _status_callback(
    texting: TextingBackend,
    params: list[tuple[str, str]],
    *,
    signed_for: str | None = None,
    body: bytes | None = None,
    content_type: str = "application/x-www-form-urlencoded",
    headers: Mapping[str, str] | None = None,
) -> int:
    target = f"{texting.url}/twilio/status"
    signature = twilio_signature(TWILIO_TOKEN, signed_for or target, params)
    response = await texting.client.session.post(
        target,
        data=urlencode(params, quote_via=quote_plus).encode() if body is None else body,
        headers={"X-Twilio-Signature": signature, "Content-Type": content_type,
                 **(headers or {})},
    )  # fmt: skip
    await response.read()
    return response.status


@pytest.fixture
async def texting(start_texting: StartTexting) -> TextingBackend:
    return await start_texting()


async def _sent(texting: TextingBackend) -> tuple[int, str]:
    sent = await texting.api.post(
        "/api/v1/messages", {"to": PERSON, "body": "hi", "purpose": "transactional"}, expect=201
    )
    await texting.settle()
    message = sent["messages"][0]
    return int(message["id"]), str(message["provider_sid"])


async def test_a_status_callback_with_blank_fields_is_accepted(texting: TextingBackend) -> None:
    message_id, sid = await _sent(texting)
    params = [("MessageSid", sid), ("MessageStatus", "read"), ("ErrorCode", ""),
              ("RawDlrDoneDate", ""), ("AccountSid", "AC1"), ("ApiVersion", "2010-04-01")]  # fmt: skip
    assert await _status_callback(texting, params) == 204
    assert (await texting.api.get(f"/api/v1/messages/{message_id}"))["status"] == "read"


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/json", "text/plain", ""]
)
async def test_a_body_of_another_type_is_refused_even_with_a_valid_url_signature(
    texting: TextingBackend, content_type: str
) -> None:
    """The forgery: a signature over the bare URL (no parameters) and a body in a type
    the signature check would not have read."""
    message_id, sid = await _sent(texting)
    body = (
        b'--x\r\nContent-Disposition: form-data; name="MessageSid"\r\n\r\n'
        + sid.encode()
        + b'\r\n--x\r\nContent-Disposition: form-data; name="MessageStatus"\r\n\r\nfailed\r\n--x--\r\n'
    )
    status = await _status_callback(texting, [], body=body, content_type=content_type)
    assert status == 415
    after = await texting.api.get(f"/api/v1/messages/{message_id}")
    assert after["status"] == "delivered"


async def test_the_form_content_type_is_matched_whatever_its_case_and_charset(
    texting: TextingBackend,
) -> None:
    _, sid = await _sent(texting)
    params = [("MessageSid", sid), ("MessageStatus", "read")]
    status = await _status_callback(
        texting, params, content_type="Application/X-WWW-Form-Urlencoded; charset=UTF-8"
    )
    assert status == 204


async def test_a_request_signed_for_the_host_it_claims_is_refused(
    texting: TextingBackend,
) -> None:
    """The URL the signature covers is the configured one, never the Host header."""
    message_id, sid = await _sent(texting)
    params = [("MessageSid", sid), ("MessageStatus", "failed")]
    status = await _status_callback(
        texting, params, signed_for="http://attacker.example/twilio/status",
        headers={"Host": "attacker.example"},
    )  # fmt: skip
    assert status == 403
    assert (await texting.api.get(f"/api/v1/messages/{message_id}"))["status"] == "delivered"


async def test_an_oversized_body_is_refused_before_it_is_read(texting: TextingBackend) -> None:
    _, sid = await _sent(texting)
    params = [("MessageSid", sid), ("MessageStatus", "failed"), ("Pad", "x" * MAX_BODY_BYTES)]
    assert await _status_callback(texting, params) == 413


async def test_a_signed_form_that_is_not_utf8_is_a_400(texting: TextingBackend) -> None:
    status = await _status_callback(texting, [], body=b"MessageSid=%FF")
    assert status == 400


# ------------------------------------------------------- the fallback for texts (/twilio/sms)


async def _fallback(texting: TextingBackend, params: list[tuple[str, str]]) -> int:
    target = f"{texting.url}/twilio/sms"
    failed = [*params, ("ErrorCode", "11200"), ("ErrorUrl", "https://x.example/webhooks/sms")]
    response = await texting.client.session.post(
        target, data=urlencode(failed).encode(),
        headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, target, failed),
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    await response.read()
    return response.status


async def test_a_text_twilio_falls_back_with_is_recorded_once_for_the_bot(
    texting: TextingBackend,
) -> None:
    sid = "SM" + "c" * 32
    assert await _fallback(texting, incoming_sms(sid, PERSON, "hello?")) == 200
    assert await _fallback(texting, incoming_sms(sid, PERSON, "hello?")) == 200  # Twilio again
    async with texting.app[SESSIONS]() as session:
        [text] = (
            await session.scalars(select(Message).where(Message.from_address == PERSON))
        ).all()
    assert (text.provider_sid, text.body, text.turn) == (sid, "hello?", "pending")


async def test_a_stop_twilio_falls_back_with_takes_effect_and_is_confirmed_once(
    texting: TextingBackend,
) -> None:
    assert await _fallback(texting, incoming_sms("SM" + "d" * 32, PERSON, "STOP")) == 200
    await texting.keywords_answered()
    profile = (await texting.api.identify("sms", PERSON))["id"]
    assert (await texting.consent(profile))[("sms", "marketing")] == "withdrawn"
    [confirmation] = texting.sent_to(PERSON)
    assert "unsubscribed" in confirmation


async def test_the_fallback_takes_only_what_twilio_signed(texting: TextingBackend) -> None:
    params = incoming_sms("SM" + "e" * 32, PERSON, "STOP")
    response = await texting.client.session.post(
        f"{texting.url}/twilio/sms", data=urlencode(params).encode(),
        headers={"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, "http://x/twilio/sms", params),
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert response.status == 403
    profile = (await texting.api.identify("sms", PERSON))["id"]
    assert (await texting.consent(profile)).get(("sms", "marketing")) != "withdrawn"
