"""An agent answering a handed-off customer through the API (role `agent`): claiming so
two people never answer at once, replies on the customer's own channel through its one
door (texts reach the Twilio emulator; web chat replies are pushed into the visitor's
conversation, signed by the door), the words put in the Rasa conversation for the bot,
call-back tasks for calls, hand-back, the audit log, and the transcript staff read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from backend.api.tokens import Role
from tests.backend.conftest import Api, IssueToken, StartTexting, TextingBackend
from tests.backend.rasa_trackers import RASA_TOKEN, RasaTrackers

WEBCHAT_SECRET = "handoff-tests-webchat-secret-" + "x" * 36
NUMBER = "+12025550143"


@dataclass
class Desk:
    backend: TextingBackend
    rasa: RasaTrackers
    agent: Api
    other_agent: Api
    admin: Api
    analyst: Api

    async def handed_off(self, conversation: str, channel: str) -> dict[str, Any]:
        return await self.backend.api.hand_off(conversation, channel)


@pytest.fixture
async def desk(
    start_texting: StartTexting,
    issue_token: IssueToken,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> Desk:
    rasa = RasaTrackers()
    server = await aiohttp_server(rasa.app())
    backend = await start_texting(
        scheduler_enabled=False, rasa_api_url=str(server.make_url("")).rstrip("/"),
        rasa_token=SecretStr(RASA_TOKEN), webchat_secret=SecretStr(WEBCHAT_SECRET),
    )  # fmt: skip

    async def api(role: Role) -> Api:
        return Api(backend.client, await issue_token(role))

    return Desk(
        backend, rasa, await api(Role.AGENT), await api(Role.AGENT), await api(Role.ADMIN),
        await api(Role.ANALYST),
    )  # fmt: skip


async def test_an_agent_claims_answers_a_texter_and_hands_back(desk: Desk) -> None:
    await desk.backend.texted(NUMBER, "can I talk to a human please")
    handoff = await desk.handed_off(NUMBER, "sms")
    path = f"/api/v1/handoffs/{handoff['id']}"
    waiting = await desk.agent.get("/api/v1/handoffs?status=open")
    assert [h["conversation_id"] for h in waiting["items"]] == [NUMBER]

    claimed = await desk.agent.post(path + "/claim", {})
    assert claimed["claimed_by"] == "test agent" and claimed["claimed_at"]
    # Another agent can neither claim it nor answer the customer.
    refused = await desk.other_agent.post(path + "/claim", {}, expect=409)
    assert refused["type"] == "urn:parley:problem:handoff-claimed"
    assert "test agent is answering" in refused["detail"]
    await desk.other_agent.post(path + "/messages", {"body": "Hi!"}, expect=409)
    assert desk.backend.sent_to(NUMBER) == []

    reply = await desk.agent.post(
        path + "/messages", {"body": "Hi, this is Sam. How can I help?"}, expect=201
    )
    assert reply["channel"] == "sms" and reply["status"] in ("sent", "queued")
    await desk.backend.settle()
    assert desk.backend.sent_to(NUMBER) == ["Hi, this is Sam. How can I help?"]
    # The bot will know what was said: the words are in the conversation, as the agent's.
    said = [e for e in desk.rasa.events[NUMBER] if e["event"] == "bot"]
    assert [(e["text"], e["metadata"]) for e in said] == [
        ("Hi, this is Sam. How can I help?", {"agent": "test agent"})
    ]
    message = await desk.agent.get(f"/api/v1/messages/{reply['message_id']}")
    assert message["purpose"] == "conversational" and message["to_address"] == NUMBER

    closed = await desk.agent.post(path + "/close", {})
    assert closed["status"] == "closed" and closed["closed_by"] == "test agent"
    assert desk.rasa.events[NUMBER][-2:] == [
        {"event": "resume"},
        {"event": "action", "name": "action_listen"},
    ]
    late = await desk.agent.post(path + "/messages", {"body": "one more"}, expect=409)
    assert late["type"] == "urn:parley:problem:handoff-closed"
    assert len(desk.backend.sent_to(NUMBER)) == 1

    audit = await desk.admin.get("/api/v1/audit")
    assert [e["action"] for e in audit["items"]][:3] == [
        "close_handoff",
        "reply_handoff",
        "claim_handoff",
    ]


async def test_a_reply_claims_a_free_hand_off_and_the_same_send_key_sends_once(
    desk: Desk,
) -> None:
    await desk.backend.texted(NUMBER, "agent")
    handoff = await desk.handed_off(NUMBER, "sms")
    path = f"/api/v1/handoffs/{handoff['id']}/messages"
    body = {"body": "On it.", "send_key": "reply-1"}
    first = await desk.agent.post(path, body, expect=201)
    again = await desk.agent.post(path, body, expect=201)
    assert again["message_id"] == first["message_id"]
    assert first["handoff"]["claimed_by"] == "test agent"
    await desk.backend.settle()
    assert desk.backend.sent_to(NUMBER) == ["On it."]


async def test_a_customer_who_texted_stop_gets_no_agent_text(desk: Desk) -> None:
    await desk.backend.texted(NUMBER, "talk to a person")
    handoff = await desk.handed_off(NUMBER, "sms")
    await desk.backend.texted(NUMBER, "STOP")
    await desk.backend.settle()
    before = desk.backend.sent_to(NUMBER)
    refused = await desk.agent.post(
        f"/api/v1/handoffs/{handoff['id']}/messages", {"body": "Still there?"}, expect=409
    )
    assert refused["type"] == "urn:parley:problem:consent-refused"
    await desk.backend.settle()
    assert desk.backend.sent_to(NUMBER) == before


async def test_a_web_chat_reply_is_pushed_into_the_visitors_conversation(desk: Desk) -> None:
    handoff = await desk.handed_off("chat-5b1e", "webchat")
    reply = await desk.agent.post(
        f"/api/v1/handoffs/{handoff['id']}/messages", {"body": "Hello from a human"}, expect=201
    )
    assert reply["channel"] == "web"
    assert desk.rasa.pushed_to == ["webchat"]
    [bot] = [e for e in desk.rasa.events["chat-5b1e"] if e["event"] == "bot"]
    assert bot["text"] == "Hello from a human" and bot["metadata"]["agent"] == "test agent"
    assert bot["metadata"]["parley_door"]  # the web chat channel drops unsigned pushes


@pytest.mark.parametrize("channel", ["voice", "alexa"])
async def test_a_call_hand_off_is_a_call_back_task(desk: Desk, channel: str) -> None:
    handoff = await desk.handed_off(NUMBER, channel)
    assert handoff["call_back"] is True
    path = f"/api/v1/handoffs/{handoff['id']}"
    refused = await desk.agent.post(path + "/messages", {"body": "hi"}, expect=409)
    assert refused["type"] == "urn:parley:problem:call-back-task"
    await desk.agent.post(path + "/claim", {})
    done = await desk.agent.post(path + "/close", {})
    assert done["status"] == "closed"


async def test_claims_are_released_and_only_an_admin_takes_one_over(desk: Desk) -> None:
    handoff = await desk.handed_off(NUMBER, "sms")
    path = f"/api/v1/handoffs/{handoff['id']}"
    await desk.agent.post(path + "/claim", {})
    await desk.other_agent.post(path + "/release", {}, expect=409)
    await desk.other_agent.post(path + "/close", {}, expect=409)
    forbidden = await desk.other_agent.post(path + "/claim", {"take_over": True}, expect=403)
    assert forbidden["type"] == "urn:parley:problem:forbidden"
    taken = await desk.admin.post(path + "/claim", {"take_over": True})
    assert taken["claimed_by"] == "test admin"
    released = await desk.admin.post(path + "/release", {})
    assert released["claimed_by"] is None
    assert (await desk.other_agent.post(path + "/claim", {}))["claimed_by"] == "test agent"


async def test_roles_agents_answer_analysts_read(desk: Desk) -> None:
    handoff = await desk.handed_off(NUMBER, "sms")
    path = f"/api/v1/handoffs/{handoff['id']}"
    await desk.analyst.post(path + "/messages", {"body": "hi"}, expect=403)
    await desk.analyst.post(path + "/claim", {}, expect=403)
    await desk.agent.get(f"/api/v1/profiles/{handoff['profile_id']}/export", expect=403)
    await desk.agent.get("/api/v1/audit", expect=403)
    await desk.agent.get(path + "/../../handoffs/not-a-uuid", expect=404)


async def test_the_transcript_says_who_said_what(desk: Desk) -> None:
    desk.rasa.events["+12025550188"] = [
        {"event": "action", "name": "action_session_start", "timestamp": 1.0},
        {"event": "user", "text": "/session_start", "timestamp": 1.1},
        {"event": "user", "text": "I want a demo for 50 seats", "timestamp": 2.0,
         "input_channel": "sms",
         "parse_data": {"intent": {"name": "request_demo", "confidence": 0.93},
                        "entities": [{"entity": "seats", "value": "50", "start": 18}]}},
        {"event": "action", "name": "utter_ask_time", "timestamp": 2.1},
        {"event": "bot", "text": "When suits you?", "timestamp": 2.2},
        {"event": "slot", "name": "seats", "value": 50, "timestamp": 2.3},
        {"event": "pause", "timestamp": 3.0},
        {"event": "action", "name": "action_follow_up", "timestamp": 4.0},
        {"event": "bot", "text": "Still keen on a demo?", "timestamp": 4.1},
        {"event": "bot", "text": "Sam here.", "timestamp": 5.0, "metadata": {"agent": "sam"}},
        {"event": "resume", "timestamp": 6.0},
    ]  # fmt: skip
    got = await desk.analyst.get("/api/v1/conversations/+12025550188/transcript")
    lines = got["lines"]
    assert [(line["speaker"], line["text"]) for line in lines] == [
        ("customer", "I want a demo for 50 seats"),
        ("bot", "When suits you?"),
        ("note", "The bot paused: the conversation is with a person."),
        ("follow_up", "Still keen on a demo?"),
        ("agent", "Sam here."),
        ("note", "The bot took the conversation back."),
    ]
    assert (lines[0]["intent"], lines[0]["confidence"], lines[0]["channel"]) == (
        "request_demo", 0.93, "sms"
    )  # fmt: skip
    assert lines[0]["entities"] == [{"entity": "seats", "value": "50"}]
    assert lines[1]["slots"] == {"seats": 50} and lines[4]["agent"] == "sam"
    missing = await desk.analyst.get("/api/v1/conversations/nobody/transcript", expect=404)
    assert missing["type"] == "urn:parley:problem:conversation-not-found"
