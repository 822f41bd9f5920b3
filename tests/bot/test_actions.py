"""The greeting and name actions against the real backend, up and down."""

from __future__ import annotations

import json
import socket
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.greeting import ActionGreet
from actions.names import ActionRememberName
from bot.backend_client import BackendClient
from tests.bot.conftest import RunningBackend, make_tracker
from tests.servers import free_port


def get_profile(backend: RunningBackend, profile_id: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{backend.url}/api/v1/profiles/{profile_id}",
        headers={"Authorization": f"Bearer {backend.token}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@pytest.fixture
async def client(backend: RunningBackend) -> Any:
    client = BackendClient(backend.url, backend.token, timeout=5)
    yield client
    await client.close()


async def test_a_new_visitor_is_greeted_as_new_and_gets_a_profile(client: BackendClient) -> None:
    dispatcher = CollectingDispatcher()
    sender = f"web-{uuid.uuid4()}"
    events = await ActionGreet(client).run(dispatcher, make_tracker(sender, "hi"), {})
    assert events[-1] == SlotSet("greeting", "new")
    assert events[0]["name"] == "profile_id" and events[0]["value"]
    assert dispatcher.messages == []  # the rules choose the words


async def test_a_name_is_stored_and_the_person_is_welcomed_back_by_it(
    client: BackendClient, backend: RunningBackend
) -> None:
    sender = f"web-{uuid.uuid4()}"
    told = make_tracker(sender, "my name is Ada", "tell_name", [{"entity": "name", "value": "Ada"}])
    events = await ActionRememberName(client).run(CollectingDispatcher(), told, {})
    assert SlotSet("first_name", "Ada") in events
    assert SlotSet("name_saved", "saved") in events
    profile_id = next(e["value"] for e in events if e["name"] == "profile_id")
    assert get_profile(backend, profile_id)["first_name"] == "Ada"

    events = await ActionGreet(client).run(
        CollectingDispatcher(), make_tracker(sender, "hello"), {}
    )
    assert SlotSet("first_name", "Ada") in events
    assert SlotSet("greeting", "returning") in events


async def test_a_name_nlu_missed_is_still_read_from_the_phrasing(
    client: BackendClient, backend: RunningBackend
) -> None:
    told = make_tracker(f"web-{uuid.uuid4()}", "you can call me zoë", "tell_name")
    events = await ActionRememberName(client).run(CollectingDispatcher(), told, {})
    assert SlotSet("first_name", "Zoë") in events
    assert SlotSet("name_saved", "saved") in events


async def test_no_name_at_all_asks_again_without_calling_the_backend(client: BackendClient) -> None:
    told = make_tracker(f"web-{uuid.uuid4()}", "what??? 123", "tell_name")
    events = await ActionRememberName(client).run(CollectingDispatcher(), told, {})
    assert events == [SlotSet("name_saved", "missing")]


@pytest.fixture
def closed_port() -> int:
    return free_port()  # nothing listens there


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield int(server.getsockname()[1])


async def test_greeting_when_the_backend_is_down_says_so_politely(closed_port: int) -> None:
    client = BackendClient(f"http://127.0.0.1:{closed_port}", "pk_x", timeout=2)
    try:
        events = await ActionGreet(client).run(CollectingDispatcher(), make_tracker("s", "hi"), {})
    finally:
        await client.close()
    assert events == [SlotSet("greeting", "unknown")]


async def test_a_backend_that_hangs_is_given_up_on_after_the_timeout(silent_server: int) -> None:
    client = BackendClient(f"http://127.0.0.1:{silent_server}", "pk_x", timeout=0.5)
    told = make_tracker("s", "I'm Grace", "tell_name", [{"entity": "name", "value": "Grace"}])
    try:
        events = await ActionRememberName(client).run(CollectingDispatcher(), told, {})
    finally:
        await client.close()
    assert events == [SlotSet("first_name", "Grace"), SlotSet("name_saved", "not_saved")]


async def test_a_backend_that_refuses_the_token_is_answered_politely(
    backend: RunningBackend,
) -> None:
    client = BackendClient(backend.url, "pk_not-a-real-token", timeout=5)
    try:
        events = await ActionGreet(client).run(CollectingDispatcher(), make_tracker("s", "hi"), {})
    finally:
        await client.close()
    assert events == [SlotSet("greeting", "unknown")]
