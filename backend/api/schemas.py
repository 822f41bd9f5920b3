"""Request and response bodies of the API, as pydantic models.

The same models validate requests, serialise responses and generate the OpenAPI
document, so the three cannot drift apart.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    ValidationInfo,
)

from backend.identities import IdentityKind, InvalidAddress, normalise_email, normalise_phone

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as error:
        raise ValueError(str(error)) from error


def _phone(value: str, info: ValidationInfo) -> str:
    region = (info.context or {}).get("default_phone_region", "US")
    try:
        return normalise_phone(value, region)
    except InvalidAddress as error:
        raise ValueError(str(error)) from error


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Paris'") from error
    return value


_LOCALE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _locale(value: str) -> str:
    if not _LOCALE.match(value):
        raise ValueError(f"{value!r} is not a locale tag such as 'en-US'")
    return value.replace("_", "-")


class ProfileFields(BaseModel):
    """A profile's core fields; each may be left out."""

    model_config = ConfigDict(extra="forbid")

    first_name: Name | None = None
    last_name: Name | None = None
    email: Annotated[str, AfterValidator(_email)] | None = None
    phone: Annotated[str, AfterValidator(_phone)] | None = Field(
        None, description="E.164 once stored; national numbers are read in the default region"
    )
    locale: Annotated[str, AfterValidator(_locale)] | None = None
    timezone: Annotated[str, AfterValidator(_timezone)] | None = Field(
        None, description="IANA time zone, e.g. 'America/New_York'"
    )
    company: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] | None = None


CORE_FIELDS = frozenset(ProfileFields.model_fields)

AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class IdentifyRequest(BaseModel):
    """Find the profile behind a channel identity, creating it if new, and update it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"channel": "web", "address": "3f2a9c", "attributes": {"first_name": "Ada"}}
            ]
        },
    )

    channel: IdentityKind
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]
    attributes: dict[AttributeKey, JsonValue] = Field(
        default_factory=dict,
        max_length=100,
        description=(
            "Core fields (first_name, last_name, email, phone, locale, timezone, company) "
            "update the profile's fields; any other key is stored as a free attribute. "
            "A null value clears it."
        ),
    )


class IdentityOut(BaseModel):
    kind: IdentityKind
    address: str
    created_at: datetime


class ProfileOut(BaseModel):
    id: uuid.UUID
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    timezone: str | None
    company: str | None
    attributes: dict[str, Any]
    identities: list[IdentityOut]
    created_at: datetime
    updated_at: datetime


class IdentifyResult(BaseModel):
    created: bool = Field(description="true when this identity was new and a profile was made")
    profile: ProfileOut


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]


class ProblemOut(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, str]] | None = None
