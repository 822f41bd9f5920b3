"""The action server's backend client against the real backend: the contract from the
bot runtime's side (the backend's own tests hold the other side)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from bot.backend_client import BackendClient, BackendRejected
from tests.bot.conftest import RunningBackend


@pytest.fixture
async def client(backend: RunningBackend) -> AsyncIterator[BackendClient]:
    client = BackendClient(backend.url, backend.token, timeout=5)
    yield client
    await client.close()


def session_id() -> str:
    return f"web-{uuid.uuid4()}"


async def test_events_reported_by_the_bot_raise_the_score(client: BackendClient) -> None:
    person = (await client.identify("web", session_id())).profile
    await client.record_event(person.id, "trial_started", {"plan": "team"}, idempotency_key="t-1")
    await client.record_event(person.id, "trial_started", {"plan": "team"}, idempotency_key="t-1")
    assert await client.score(person.id) == 30


async def test_consent_asked_in_dialogue_is_recorded_with_its_words(client: BackendClient) -> None:
    person = (await client.identify("web", session_id())).profile
    email = await client.record_consent(
        person.id, "email", "marketing", "grant",
        wording="May we email you our monthly tips?", reply="yes please",
    )  # fmt: skip
    assert (email.state, email.allowed) == ("pending", False)  # until the e-mail's link
    sms = await client.record_consent(
        person.id, "sms", "marketing", "grant",
        wording="Can we text you offers? Reply YES to confirm.", reply="ok",
    )  # fmt: skip
    assert (sms.state, sms.allowed) == ("pending", False)
    assert (await client.consent(person.id, "sms", "marketing")).state == "pending"


async def test_a_phone_number_someone_else_has_merges_the_two(client: BackendClient) -> None:
    number = f"+1415555{uuid.uuid4().int % 10000:04d}"
    texter = (await client.identify("sms", number)).profile
    visitor = (await client.identify("web", session_id(), {"first_name": "Ada"})).profile
    added = await client.add_identity(visitor.id, "sms", number)
    assert added.profile.id == texter.id
    assert added.merged_away == visitor.id
    assert added.profile.first_name == "Ada"


async def test_segment_membership_and_refusals_come_back_typed(client: BackendClient) -> None:
    person = (await client.identify("web", session_id(), {"team_size": 80})).profile
    assert await client.in_segment("big-teams", person.id) is True
    with pytest.raises(BackendRejected) as rejected:
        await client.record_consent(person.id, "all", "marketing", "grant", wording="?", reply="?")
    assert rejected.value.status == 422
    assert rejected.value.problem["type"] == "urn:parley:problem:consent-channel-all"
