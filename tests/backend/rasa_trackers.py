"""A stand-in for the parts of Rasa's HTTP API the backend calls for hand-offs,
transcripts and erasure, holding each conversation's events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

RASA_TOKEN = "backend-tests-rasa-token"


@dataclass
class RasaTrackers:
    """Rasa's HTTP API as the backend uses it: `POST /conversations/{id}/tracker/events`
    (appends; `output_channel` pushes the bot's words) and the bot's own `POST
    /webhooks/conversations/append` (many at once), `GET
    /webhooks/conversations/{id}/tracker` and `DELETE /webhooks/conversations/{id}`
    (channels.conversation_batch)."""

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pushed_to: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/conversations/{id}/tracker/events", self.append)
        app.router.add_post("/webhooks/conversations/append", self.append_to_many)
        app.router.add_get("/webhooks/conversations/{id}/tracker", self.tracker)
        app.router.add_delete("/webhooks/conversations/{id}", self.erase)
        return app

    async def append(self, request: web.Request) -> web.Response:
        if request.query.get("token") != RASA_TOKEN:
            return web.json_response({"message": "no token"}, status=401)
        held = self.events.setdefault(request.match_info["id"], [])
        held.extend(await request.json())
        self.pushed_to.append(request.query.get("output_channel"))
        return web.json_response({"events": held})

    async def append_to_many(self, request: web.Request) -> web.Response:
        """The bot's batch append (channels.conversation_batch): each conversation's."""
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            return web.json_response({"message": "no token"}, status=401)
        body = await request.json()
        for item in body["conversations"]:
            self.events.setdefault(item["conversation_id"], []).extend(item["events"])
        return web.json_response(
            {"appended": [i["conversation_id"] for i in body["conversations"]], "failed": []}
        )

    async def tracker(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            return web.json_response({"message": "no token"}, status=401)
        conversation = request.match_info["id"]
        return web.json_response(
            {"sender_id": conversation, "events": self.events.get(conversation, [])}
        )

    async def erase(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {RASA_TOKEN}":
            return web.json_response({"message": "no token"}, status=401)
        return web.json_response({"erased": len(self.events.pop(request.match_info["id"], []))})
