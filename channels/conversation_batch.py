"""Conversations under their locks: events appended to many conversations in one
request (how the backend's scheduler records a batch of follow-ups in the people's
conversations before it sends them), and a conversation read once its turn is over (how
the web chat's history is read).

Rasa's own `POST /conversations/{id}/tracker/events` takes one conversation a request.
This endpoint does what it does for each conversation of a batch: under the
conversation's lock it fetches the tracker (a new conversation gets its session start
first, as Rasa's endpoint does), appends the events, and saves the tracker. The events
are read after the session has started, so they come after it and stay visible.
A conversation that fails is reported in the answer; the others are still appended.

`POST /webhooks/conversations/append` with `Authorization: Bearer <PARLEY_RASA_TOKEN>`
(the token of Rasa's HTTP API) and a body
`{"conversations": [{"conversation_id": "+14155550100", "events": [{...}, ...]}, ...]}`;
the answer is `{"appended": [ids], "failed": [{"conversation_id": ..., "error": ...}]}`.

`GET /webhooks/conversations/<conversation_id>/tracker`, with the same token, answers
what Rasa's `GET /conversations/<id>/tracker` does (all sessions, events since the last
restart), but read under the conversation's lock: a turn in progress has sent its
messages to the visitor's open tabs before Rasa saves them, so a read without the lock
can miss what a tab already shows. A conversation nobody has written in has no events
(Rasa's endpoint would run a session start for it, and not keep it).

Privacy (docs/privacy.md), with the same token:

- `DELETE /webhooks/conversations/<conversation_id>` erases the conversation from the
  tracker store, every session of it, under its lock: `{"erased": <events deleted>}`.
- `POST /webhooks/conversations/retention` with `{"before": <Unix time>, "limit": <n>}`
  deletes at most `limit` (1 to 5000) events stamped before `before`, oldest first, in
  one short transaction: `{"deleted": n, "more": <whether a full batch was deleted>}`.
  The backend's retention job calls it until `more` is false, so that no long
  transaction ever holds the table.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from rasa.core.agent import Agent
from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.lock_store import LockError
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import EventVerbosity
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot import tracker_store as tracker_stores
from bot.settings import settings

logger = logging.getLogger(__name__)

# Conversations per request at most; the backend sends one batch of its scheduler.
MAX_CONVERSATIONS = 1000
# Conversations appended at once (each fetches and saves its tracker).
CONCURRENT = 16
# How often a read waiting for a conversation's turn asks for the lock again (Rasa's
# default, one second, is long for a visitor watching the chat load).
READ_LOCK_POLL_SECONDS = 0.05
UNAUTHORISED = "The request needs Rasa's API token as a Bearer token."
NOT_LOADED = "No model is loaded yet; try again shortly."


class ConversationBatchInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "conversations"

    def __init__(self, token: str | None = None) -> None:
        secret = settings().rasa_token
        self.token = token or (secret.get_secret_value() if secret else "")

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        batch = Blueprint("conversation_batch", __name__)

        @batch.route("/append", methods=["POST"])
        async def append(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return _problem(401, UNAUTHORISED)
            items = _conversations(request)
            if items is None:
                return _problem(
                    400,
                    'The body must be {"conversations": [{"conversation_id": "…", '
                    f'"events": [{{…}}]}}]}} with 1 to {MAX_CONVERSATIONS} conversations.',
                )
            agent = _loaded_agent(request)
            if agent is None:
                return _problem(503, NOT_LOADED)
            gate = asyncio.Semaphore(CONCURRENT)

            async def one(conversation_id: str, events: list[dict[str, Any]]) -> str | None:
                async with gate:
                    try:
                        await _append(agent, conversation_id, events)
                    except Exception as error:  # one conversation must not fail the rest
                        logger.warning(
                            "conversations.append_failed", exc_info=True,
                            extra={"error": str(error)},
                        )  # fmt: skip
                        return f"{type(error).__name__}: {error}"
                    return None

            errors = await asyncio.gather(*(one(c, e) for c, e in items))
            outcomes = list(zip((c for c, _ in items), errors, strict=True))
            return response.json(
                {
                    "appended": [c for c, error in outcomes if error is None],
                    "failed": [
                        {"conversation_id": c, "error": error}
                        for c, error in outcomes
                        if error is not None
                    ],
                }
            )

        @batch.route("/<conversation_id:path>/tracker", methods=["GET"])
        async def tracker(request: Request, conversation_id: str) -> HTTPResponse:
            agent = self._agent(request)
            if isinstance(agent, HTTPResponse):
                return agent
            try:
                # Sanic leaves a path parameter's escapes (a phone number's %2B) as sent.
                return response.json(await _read(agent, unquote(conversation_id)))
            except LockError:
                logger.warning("conversations.read_lock_expired")
                return _problem(503, "The conversation is busy; try again shortly.")

        @batch.route("/retention", methods=["POST"])
        async def retention(request: Request) -> HTTPResponse:
            agent = self._agent(request)
            if isinstance(agent, HTTPResponse):
                return agent
            asked = _retention_request(request)
            if asked is None:
                return _problem(
                    400, 'The body must be {"before": <Unix time>, "limit": <1 to 5000>}.'
                )
            before, limit = asked
            try:
                deleted = await asyncio.to_thread(
                    tracker_stores.delete_older_than, agent.tracker_store, before, limit
                )
            except NotImplementedError as error:
                return _problem(501, str(error))
            logger.info("conversations.retention deleted=%d", deleted)
            return response.json({"deleted": deleted, "more": deleted == limit})

        @batch.route("/<conversation_id:path>", methods=["DELETE"])
        async def erase(request: Request, conversation_id: str) -> HTTPResponse:
            agent = self._agent(request)
            if isinstance(agent, HTTPResponse):
                return agent
            conversation_id = unquote(conversation_id)
            try:
                # Under the lock: a turn in progress saves before, never after, this.
                async with agent.lock_store.lock(conversation_id):
                    erased = await asyncio.to_thread(
                        tracker_stores.erase_conversation, agent.tracker_store, conversation_id
                    )
            except NotImplementedError as error:
                return _problem(501, str(error))
            except LockError:
                return _problem(503, "The conversation is busy; try again shortly.")
            logger.info("conversations.erased events=%d", erased)
            return response.json({"erased": erased})

        return batch

    def _agent(self, request: Request) -> Agent | HTTPResponse:
        """Rasa's agent for a caller with Rasa's token, else the problem to answer."""
        if not self._authorised(request):
            return _problem(401, UNAUTHORISED)
        agent = _loaded_agent(request)
        return agent if agent is not None else _problem(503, NOT_LOADED)

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())


async def _append(agent: Agent, conversation_id: str, events: list[dict[str, Any]]) -> None:
    """What Rasa's tracker-events endpoint does for one conversation, with the events
    read (and stamped) after a new conversation's session has started."""
    async with agent.lock_store.lock(conversation_id):
        tracker = await agent.processor.fetch_tracker_with_initial_session(conversation_id)
        parsed = [Event.from_parameters(e) for e in events]
        if any(event is None for event in parsed):
            raise ValueError("an event Rasa does not know")
        for event in parsed:
            tracker.update(event, agent.domain)
        await agent.tracker_store.save(tracker)


def _loaded_agent(request: Request) -> Agent | None:
    """Rasa's agent, once its model is loaded."""
    agent: Agent | None = getattr(request.app.ctx, "agent", None)
    return agent if agent is not None and agent.is_ready() else None


async def _read(agent: Agent, conversation_id: str) -> dict[str, Any]:
    """The conversation as Rasa's tracker endpoint shows it, once no turn is running."""
    async with agent.lock_store.lock(conversation_id, wait_time_in_seconds=READ_LOCK_POLL_SECONDS):
        tracker = await agent.tracker_store.retrieve_full_tracker(conversation_id)
    if tracker is None:
        return {"sender_id": conversation_id, "events": []}
    state: dict[str, Any] = tracker.current_state(EventVerbosity.AFTER_RESTART)
    return state


def _conversations(request: Request) -> list[tuple[str, list[dict[str, Any]]]] | None:
    """The batch in the body, or None if it is not one."""
    try:
        body = request.json
    except Exception:  # Sanic raises on a body that is not JSON
        return None
    items = body.get("conversations") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CONVERSATIONS:
        return None
    found: list[tuple[str, list[dict[str, Any]]]] = []
    for item in items:
        if not isinstance(item, dict):
            return None
        conversation_id, events = item.get("conversation_id"), item.get("events")
        if not isinstance(conversation_id, str) or not conversation_id:
            return None
        if not isinstance(events, list) or not events:
            return None
        if not all(isinstance(e, dict) and isinstance(e.get("event"), str) for e in events):
            return None
        found.append((conversation_id, events))
    return found


def _retention_request(request: Request) -> tuple[float, int] | None:
    try:
        body = request.json
    except Exception:  # Sanic raises on a body that is not JSON
        return None
    if not isinstance(body, dict):
        return None
    before, limit = body.get("before"), body.get("limit")
    if isinstance(before, bool) or not isinstance(before, int | float):
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 5000:
        return None
    return float(before), limit


def _problem(status: int, detail: str) -> HTTPResponse:
    return response.json(
        {"type": "about:blank", "title": detail, "status": status},
        status=status,
        content_type="application/problem+json",
    )
