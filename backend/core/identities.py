"""Identity kinds and their addresses: parsing, normalising and redacting them.

Phone numbers are read with `phonenumbers` and stored in E.164; e-mail addresses are
checked with `email-validator` (syntax only: no DNS lookups from a webhook path).
"""

from __future__ import annotations

import re
from enum import StrEnum

import phonenumbers
from email_validator import EmailNotValidError, validate_email


class IdentityKind(StrEnum):
    SMS = "sms"
    VOICE = "voice"
    EMAIL = "email"
    WEB = "web"
    ALEXA = "alexa"


PHONE_KINDS = frozenset({IdentityKind.SMS, IdentityKind.VOICE})


class InvalidAddress(ValueError):
    """The address cannot be an identity of that kind; the message says why."""


# A number written exactly as carriers and Twilio write it: +, country code, number.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def normalise_phone(raw: str, default_region: str) -> str:
    """The number in E.164. Written any other way it must be a number the phone library
    knows to be valid; written in E.164 (as Twilio gives a sender) it needs only a
    possible length, so that a range the library does not know yet, or a fictional
    555 number, is still someone's address, never a text dropped."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as error:
        raise InvalidAddress(f"{raw!r} is not a phone number") from error
    if phonenumbers.is_valid_number(number):
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if _E164.fullmatch(raw) and phonenumbers.is_possible_number_with_reason(number) == (
        phonenumbers.ValidationResult.IS_POSSIBLE
    ):
        return raw
    raise InvalidAddress(f"{raw!r} is not a valid phone number")


def normalise_email(raw: str) -> str:
    """The address as Parley keeps it: checked, and in lower case, since every mail
    provider people use reads `Ada@Example.com` and `ada@example.com` as one mailbox (the
    address typed in a form and the one a reply comes from must find one person)."""
    try:
        return validate_email(raw, check_deliverability=False).normalized.lower()
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from error


def normalise_address(kind: IdentityKind, raw: str, default_region: str) -> str:
    address = raw.strip()
    if not address:
        raise InvalidAddress("must not be empty")
    if kind in PHONE_KINDS:
        return normalise_phone(address, default_region)
    if kind is IdentityKind.EMAIL:
        return normalise_email(address)
    if len(address) > 320:
        raise InvalidAddress("must be at most 320 characters")
    return address


def redact(kind: IdentityKind | str, address: str) -> str:
    """What a log line at info level may show of an address."""
    if kind in PHONE_KINDS:
        country = _country_code(address)
        return f"+{country}…{address[-4:]}" if country else "…"
    if kind == IdentityKind.EMAIL and "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}…@{domain}"
    return address if len(address) <= 12 else address[:8] + "…"


def _country_code(number: str) -> int | None:
    """The country calling code of a phone number; for an E.164 number read off its
    first digits (calling codes are prefix-free), which costs far less than a parse and
    runs for every text logged."""
    if number.startswith("+") and number[1:].isdigit():
        for size in (1, 2, 3):
            if int(number[1 : 1 + size]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                return int(number[1 : 1 + size])
        return None
    try:
        return phonenumbers.parse(number).country_code
    except phonenumbers.NumberParseException:
        return None
