"""Request and response bodies of the profile routes, and the address fields other bodies share."""

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

from backend.core.identities import IdentityKind, InvalidAddress, normalise_email, normalise_phone

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _email(value: str) -> str:
    try:
        return normalise_email(value)
    except InvalidAddress as error:
        raise ValueError(str(error)) from error


def phone_for_context(value: str, info: ValidationInfo) -> str:
    """A phone number in E.164, read in the request's default region (the validation
    context's `default_phone_region`, else US)."""
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
    phone: Annotated[str, AfterValidator(phone_for_context)] | None = Field(
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


class IdentityIn(BaseModel):
    """An identity to add to a profile."""

    model_config = ConfigDict(extra="forbid")

    kind: IdentityKind
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=320)]


class IdentityOut(BaseModel):
    kind: IdentityKind
    address: str
    created_at: datetime


class ProfileOut(BaseModel):
    """A profile: core fields, free attributes, identities and today's lead score."""

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
    score: float
    created_at: datetime
    updated_at: datetime


class ProfilePage(BaseModel):
    """Profiles that match a search, ordered by id; pass `next` as `after` for the page
    after."""

    items: list[ProfileOut]
    next: uuid.UUID | None


class IdentifyResult(BaseModel):
    """The profile found (200) or created (201) for an identity."""

    created: bool = Field(description="true when this identity was new and a profile was made")
    profile: ProfileOut


class ProfileUpdate(BaseModel):
    """Changes to a profile, with the same meaning as in identify."""

    model_config = ConfigDict(extra="forbid")

    attributes: dict[AttributeKey, JsonValue] = Field(max_length=100)


class IdentityAdded(BaseModel):
    """The profile after adding an identity; if the identity was someone else's, the two
    profiles were the same person and were merged."""

    profile: ProfileOut
    merged_away: uuid.UUID | None = Field(description="the profile merged into this one, if any")


class MergeRequest(BaseModel):
    """Merge another profile of the same person into this one (the older one survives)."""

    model_config = ConfigDict(extra="forbid")

    other: uuid.UUID
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] = "merged by request"


class MergedPointer(BaseModel):
    """This profile was merged into another: follow `merged_into`."""

    merged_into: uuid.UUID


Phone = Annotated[
    str, StringConstraints(min_length=1, max_length=32), AfterValidator(phone_for_context)
]


class RetentionRunOut(BaseModel):
    """One run of the retention job: what it deleted of each (or why it could not)."""

    id: int
    started_at: datetime
    finished_at: datetime | None
    status: Literal["running", "done", "failed"]
    deleted: dict[str, int | str] = Field(
        description="rows deleted: conversation_events (in Rasa's tracker store), "
        "rasa_events (the backend's copy of them), conversation_rollups (what their messages "
        "add up to), messages, held_messages, events"
    )
    error: str | None
    started_by: str


class RetentionOut(BaseModel):
    """How long Parley keeps each kind of data (data/business.yml `retention:`), and
    the latest runs of the job that deletes what is older, newest first."""

    conversations_days: int
    messages_days: int
    events_days: int
    runs: list[RetentionRunOut]
