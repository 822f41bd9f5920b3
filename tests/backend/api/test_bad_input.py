"""Bad requests get a 4xx with an RFC 9457 problem body that says what is wrong."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from backend.api.tokens import Role
from tests.backend.conftest import IssueToken
from tests.hostile_json import HOSTILE_VALUES, in_object

IDENTIFY = "/api/v1/identify"


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    assert "Traceback" not in str(body)
    return body


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"channel": "fax", "address": "x"}, "/channel"),
        ({"channel": "web"}, "/address"),
        ({"channel": "web", "address": "   "}, "/address"),
        ({"channel": "sms", "address": "not a phone"}, "/address"),
        ({"channel": "sms", "address": "+1 555 0100"}, "/address"),
        ({"channel": "email", "address": "ada@"}, "/address"),
        ({"channel": "web", "address": "s", "attributes": {"email": "nope"}}, "/attributes/email"),
        ({"channel": "web", "address": "s", "attributes": {"timezone": "Mars/Olympus"}}, "/attributes/timezone"),
        ({"channel": "web", "address": "s", "attributes": {"first_name": ""}}, "/attributes/first_name"),
        ({"channel": "web", "address": "s", "attributes": {"first_name": 42}}, "/attributes/first_name"),
        ({"channel": "web", "address": "s", "attributes": "Ada"}, "/attributes"),
        ({"channel": "web", "address": "s", "surprise": 1}, "/surprise"),
    ],
)  # fmt: skip
async def test_invalid_identify_bodies_name_the_field(
    client: TestClient, service_headers: dict[str, str], body: dict[str, Any], pointer: str
) -> None:
    response = await client.post(IDENTIFY, json=body, headers=service_headers)
    details = await problem(response, 422)
    assert details["type"] == "urn:parley:problem:invalid-body"
    assert pointer in [error["pointer"] for error in details["errors"]]


async def test_a_body_that_is_not_json_is_a_400(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    response = await client.post(
        IDENTIFY,
        data=b'{"channel": "web", ',
        headers={**service_headers, "Content-Type": "application/json"},
    )
    assert (await problem(response, 400))["type"] == "urn:parley:problem:invalid-json"


async def test_json_that_is_not_an_object_is_a_422(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    for payload in ("[1, 2]", "null", '"hi"', "\xff"):
        response = await client.post(
            IDENTIFY,
            data=payload.encode("latin-1"),
            headers={**service_headers, "Content-Type": "application/json"},
        )
        assert response.status in {400, 422}
        await problem(response, response.status)


async def test_a_body_that_is_not_json_by_content_type_is_a_415(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    response = await client.post(IDENTIFY, data="channel=web", headers=service_headers)
    await problem(response, 415)


async def test_a_body_over_one_mebibyte_is_a_413(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    response = await client.post(
        IDENTIFY,
        data=b"{" + b" " * (1024 * 1024 + 10) + b"}",
        headers={**service_headers, "Content-Type": "application/json"},
    )
    await problem(response, 413)


async def test_unknown_paths_and_methods_are_problems(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    await problem(await client.get("/api/v1/nothing-here", headers=service_headers), 404)
    not_allowed = await client.delete(IDENTIFY, headers=service_headers)
    await problem(not_allowed, 405)
    assert "POST" in not_allowed.headers["Allow"]


# The unauthenticated route, and API routes of each kind of caller, each reading a body.
JSON_ROUTES = [
    ("POST", "/chat/sessions", None),
    ("POST", IDENTIFY, Role.SERVICE),
    ("POST", "/api/v1/events", Role.SERVICE),
    ("PATCH", f"/api/v1/profiles/{uuid.UUID(int=1)}", Role.ADMIN),
    ("POST", "/api/v1/segment-previews", Role.MARKETER),
]


@pytest.mark.parametrize(("value", "detail"), HOSTILE_VALUES.values(), ids=HOSTILE_VALUES)
async def test_hostile_json_is_a_400_that_says_why_on_json_routes(
    client: TestClient,
    issue_token: IssueToken,
    capfd: pytest.CaptureFixture[str],
    value: bytes,
    detail: str,
) -> None:
    """Each of these bodies once made a 500 with a traceback (deep nesting, integers past
    4,300 digits) or reached the database, which failed on it (NaN, Infinity, lone
    surrogates); past 64 bits an integer was stored as given."""
    body = in_object(value)
    for method, path, role in JSON_ROUTES:
        headers = {"Content-Type": "application/json"}
        if role is not None:
            headers["Authorization"] = f"Bearer {await issue_token(role)}"
        response = await client.request(method, path, data=body, headers=headers)
        details = await problem(response, 400)
        assert details["type"] == "urn:parley:problem:invalid-json", path
        assert detail in details["detail"], path
    logged = "".join(capfd.readouterr())
    assert "Traceback" not in logged
    assert "request.failed" not in logged


async def test_json_at_the_bounds_is_accepted(
    client: TestClient, service_headers: dict[str, str]
) -> None:
    nested: Any = "bottom"
    for _ in range(30):  # with the body and the attributes: 32 levels
        nested = [nested]
    attributes = {
        "largest": 9223372036854775807,
        "smallest": -9223372036854775808,
        "float": 1.5e308,
        "emoji": "\N{GRINNING FACE}",
        "nested": nested,
    }
    response = await client.post(
        IDENTIFY,
        json={"channel": "web", "address": "bounds", "attributes": attributes},
        headers=service_headers,
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["profile"]["attributes"] == attributes
