"""Parley's REST channel beside Rasa's own, both registered by Rasa's `register()` on
one real Sanic server on loopback, as `rasa run` does (Rasa's under a second name, so
both can be served at once). A stand-in agent answers through the channel's collector
the way Rasa's processor does, or fails part way through a turn, as Rasa does when its
tracker store cannot save.

A turn that succeeds gets the same answer from both; one that fails gets 200 and the
bot's partial answer from Rasa's channel, and a 503 problem from Parley's.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from rasa.core.channels import rest
from rasa.core.channels.channel import UserMessage

from channels.rest import RestInput
from tests.bot.sanic_server import serving_channels


class RasasRestInput(rest.RestInput):  # type: ignore[misc]
    """Rasa's channel, unchanged, under another URL."""

    @classmethod
    def name(cls) -> str:
        return "rasa_rest"


@dataclass
class Agent:
    """Answers through the collector; with `fail_after_answering`, then fails, as a
    turn whose save fails does."""

    fail_after_answering: bool = False
    received: list[UserMessage] = field(default_factory=list)

    async def handle_message(self, message: UserMessage) -> None:
        self.received.append(message)
        out = message.output_channel
        await out.send_text_message(message.sender_id, f"you said: {message.text}")
        await out.send_text_with_buttons(
            message.sender_id, "Anything else?", [{"title": "Pricing", "payload": "/pricing"}]
        )
        if self.fail_after_answering:
            raise ConnectionError("could not save the conversation: the database is restarting")


@dataclass
class Served:
    url: str
    agent: Agent
    http: aiohttp.ClientSession

    async def post(self, channel: str, body: dict[str, Any]) -> tuple[int, Any, str]:
        async with self.http.post(f"{self.url}/webhooks/{channel}/webhook", json=body) as got:
            return got.status, await got.json(content_type=None), got.content_type


@asynccontextmanager
async def serving(agent: Agent) -> AsyncIterator[Served]:
    async with (
        serving_channels([RestInput(), RasasRestInput()], agent) as url,
        aiohttp.ClientSession() as http,
    ):
        yield Served(url, agent, http)


BODY = {"sender": "rest-test-person", "message": "hi there", "metadata": {"page": "/pricing"}}


async def test_a_turn_that_succeeds_is_answered_as_rasa_answers_it() -> None:
    async with serving(Agent()) as served:
        ours = await served.post("rest", BODY)
        rasas = await served.post("rasa_rest", BODY)
        health = await served.http.get(f"{served.url}/webhooks/rest/")
        assert (health.status, await health.json()) == (200, {"status": "ok"})
    assert ours == rasas
    status, answer, _ = ours
    assert status == 200
    assert [m["text"] for m in answer] == ["you said: hi there", "Anything else?"]
    assert answer[1]["buttons"] == [{"title": "Pricing", "payload": "/pricing"}]
    first, second = served.agent.received
    for name, message in (("rest", first), ("rasa_rest", second)):
        assert (message.sender_id, message.text, message.metadata) == (
            "rest-test-person", "hi there", {"page": "/pricing"},
        )  # fmt: skip
        assert message.input_channel == name


async def test_a_turn_that_fails_is_a_503_problem_not_a_partial_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="channels.rest")
    async with serving(Agent(fail_after_answering=True)) as served:
        rasas = await served.post("rasa_rest", BODY)
        async with served.http.post(f"{served.url}/webhooks/rest/webhook", json=BODY) as got:
            status, problem = got.status, await got.json(content_type=None)
            content_type, retry_after = got.content_type, got.headers.get("Retry-After")
    # Rasa's: a success, with what the bot said before the turn failed.
    assert rasas[0] == 200 and rasas[1][0]["text"] == "you said: hi there"
    assert (status, content_type, retry_after) == (503, "application/problem+json", "5")
    assert problem["status"] == 503 and problem["instance"] == "/webhooks/rest/webhook"
    assert "send it again" in problem["detail"]
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "channels.rest")
    assert "rest.turn_failed error=ConnectionError" in logged
    assert "hi there" not in logged and "rest-test-person" not in logged
