"""Hostile JSON at the bot's door: the real Rasa server, started as `parley run` starts
it (`python -m bot.rasa_server run --enable-api` with bot/credentials.yml and
bot/endpoints.yml), answers a hostile body on every JSON route, Rasa's and Parley's,
with a 400 problem before Rasa or a channel reads it, closes a web chat socket that
sends one, and logs no traceback.

Without bot/json_guard.py these bodies got 500s with tracebacks (a 900-level message on
the REST channel, a deep body on the Alexa webhook), went into conversations (NaN,
numbers that overflow, lone surrogates), or stopped the server (a lone surrogate in the
REST channel's sender id). The server runs without a model: the guard answers before
any model would be asked, and so the test needs no `make train`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import jwt
import pytest

from channels.webchat import AUDIENCE
from tests.bot.conftest import ROOT, wait_until_up
from tests.hostile_json import DEEP, HOSTILE_VALUES
from tests.servers import free_port

TOKEN = "hostile-json-test-token"
WEBCHAT_SECRET = "hostile-json-test-webchat-secret-of-32-bytes"
# Rasa imports TensorFlow and spaCy before it listens.
STARTUP_SECONDS = 300

# Enough for the Alexa channel to read the body (the signature is never checked).
ALEXA_HEADERS = {
    "SignatureCertChainUrl": "https://s3.amazonaws.com/echo.api/echo-api-cert.pem",
    "Signature-256": "AAAA",
}
# (route, Content-Type, body with a hostile value for X): Rasa's REST channel (also as
# text/plain, which it reads as JSON all the same), Rasa's HTTP API, and Parley's Alexa
# and conversation batch channels.
ROUTES = {
    "rest-message": ("/webhooks/rest/webhook", "application/json", b'{"sender": "s", "message": X}'),
    "rest-sender": ("/webhooks/rest/webhook", "application/json", b'{"sender": X, "message": "hi"}'),
    "rest-metadata-as-text": ("/webhooks/rest/webhook", "text/plain", b'{"sender": "s", "message": "hi", "metadata": {"x": X}}'),
    "alexa": ("/webhooks/alexa/webhook", "application/json; charset=utf-8", b'{"version": "1.0", "request": {"type": X}}'),
    "conversation-batch": ("/webhooks/conversations/append", "application/json", b'{"conversations": [{"conversation_id": "c", "events": [{"event": "slot", "name": "x", "value": X}]}]}'),
    "model-parse": (f"/model/parse?token={TOKEN}", "application/json", b'{"text": X}'),
    "conversation-messages": (f"/conversations/c/messages?token={TOKEN}", "application/json", b'{"text": X, "sender": "user"}'),
    "tracker-events": (f"/conversations/c/tracker/events?token={TOKEN}", "application/json", b'[{"event": "slot", "name": "x", "value": X}]'),
}  # fmt: skip


@dataclass
class RasaServer:
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def output(self, since: int = 0) -> str:
        """What the server has logged (from character `since` on)."""
        return self.log.read_text(errors="replace")[since:]

    def mark(self) -> int:
        return len(self.output())


@pytest.fixture(scope="module")
def rasa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasaServer]:
    var = tmp_path_factory.mktemp("hostile-json")
    (var / "no-model").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "RASA_TELEMETRY_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
        "PARLEY_RASA_TOKEN": TOKEN,
        "PARLEY_WEBCHAT_SECRET": WEBCHAT_SECRET,
        # What bot/endpoints.yml names; nothing here is called without a model.
        "PARLEY_ACTION_SERVER_URL": f"http://127.0.0.1:{free_port()}/webhook",
        "PARLEY_ACTION_SERVER_TOKEN": "unused",
        "PARLEY_RASA_TRACKER_STORE_URL": f"sqlite:///{var / 'tracker.db'}",
        "PARLEY_BACKEND_URL": f"http://127.0.0.1:{free_port()}",
        "PARLEY_BACKEND_TOKEN": "unused",
    }
    log = var / "rasa.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "bot.rasa_server", "run",
                "--model", str(var / "no-model"),
                "--endpoints", str(ROOT / "bot" / "endpoints.yml"),
                "--credentials", str(ROOT / "bot" / "credentials.yml"),
                "--interface", "127.0.0.1", "--port", str(port), "--enable-api",
            ],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = RasaServer(f"http://127.0.0.1:{port}", log, process)
    try:
        try:
            wait_until_up(f"{server.url}/", process, timeout=STARTUP_SECONDS)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{server.output()[-5000:]}")
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.parametrize("route", ROUTES)
async def test_hostile_json_on_every_route_is_a_400_problem_and_no_traceback(
    rasa: RasaServer, route: str
) -> None:
    path, content_type, template = ROUTES[route]
    mark = rasa.mark()
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKEN}", **ALEXA_HEADERS}
    async with aiohttp.ClientSession() as http:
        for name, (value, detail) in HOSTILE_VALUES.items():
            body = template.replace(b"X", value)
            async with http.post(f"{rasa.url}{path}", data=body, headers=headers) as response:
                assert response.status == 400, (name, await response.text())
                assert response.content_type == "application/problem+json", name
                problem = await response.json(content_type=None)
            assert problem["type"] == "urn:parley:problem:invalid-json", name
            assert problem["status"] == 400
            assert detail in problem["detail"], (name, problem)
    assert rasa.process.poll() is None, "the Rasa server stopped"
    assert "Traceback" not in rasa.output(since=mark)


async def test_json_within_the_bounds_reaches_rasa_and_the_channels(rasa: RasaServer) -> None:
    """The guard lets ordinary bodies through, whatever their Content-Type: each route
    answers as it does without a model."""
    mark = rasa.mark()
    bounded = b'{"n": 9223372036854775807, "x": 1.5e308, "s": "\\ud83d\\ude00"}'
    async with aiohttp.ClientSession() as http:
        for content_type in ("application/json", "text/plain"):
            rest = await http.post(
                f"{rasa.url}/webhooks/rest/webhook",
                data=b'{"sender": "s", "message": "hi", "metadata": ' + bounded + b"}",
                headers={"Content-Type": content_type},
            )
            assert (rest.status, await rest.json()) == (200, [])  # no model: no answer
        batch = await http.post(
            f"{rasa.url}/webhooks/conversations/append",
            data=b'{"conversations": [{"conversation_id": "c", "events": [{"event": "slot", '
            b'"name": "x", "value": ' + bounded + b"}]}]}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        assert batch.status == 503  # the channel's own answer while no model is loaded
        parse = await http.post(
            f"{rasa.url}/model/parse?token={TOKEN}",
            json={"text": "hi", "extra": json.loads(bounded)},
        )
        assert parse.status == 409  # Rasa's "no agent loaded"
    assert "Traceback" not in rasa.output(since=mark)


def chat_token(session_id: str) -> str:
    now = int(time.time())
    claims = {"sub": session_id, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return jwt.encode(claims, WEBCHAT_SECRET, algorithm="HS256")


# A message whose other member is a hostile value (all but the two that are not UTF-8:
# a WebSocket text frame cannot carry them), and two packets that are not socket.io.
SOCKET_PACKETS = {
    name: '42["user_uttered",{"message":"hi","x":' + value.decode() + "}]"
    for name, (value, _) in HOSTILE_VALUES.items()
    if "utf" not in name
} | {
    "engineio-deep": "4" + "[" * DEEP + "]" * DEEP,
    "not-socket-io": "4hello",
}


@pytest.mark.parametrize("packet", SOCKET_PACKETS)
async def test_a_web_chat_socket_that_sends_hostile_json_is_closed_without_a_traceback(
    rasa: RasaServer, packet: str
) -> None:
    url = f"{rasa.url}/socket.io/?EIO=4&transport=websocket"
    mark = rasa.mark()
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as socket:
        assert (await socket.receive_str()).startswith("0")  # engine.io open
        await socket.send_str("40" + json.dumps({"token": chat_token("visitor-1")}))
        assert (await socket.receive_str()).startswith("40")  # connected to the chat
        await socket.send_str('42["session_request",{"session_id":"visitor-1"}]')
        assert await socket.receive_str() == '42["session_confirm","visitor-1"]'
        await socket.send_str(SOCKET_PACKETS[packet])
        closed = await asyncio.wait_for(socket.receive(), timeout=10)
        assert closed.data == "1" or closed.type in {
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        }, closed  # engine.io's close packet, or the socket itself closing
    output = rasa.output(since=mark)
    assert "webchat.packet_refused" in output
    assert "Traceback" not in output
