"""Rasa's REST channel (`POST /webhooks/rest/webhook`, the one curl and a site's own
chat front end use), except that a turn that failed is not answered as a success.

Rasa's channel catches any error of the turn, logs it with the person's text, and
answers 200 with whatever the bot had said before the error: the client cannot tell
that the turn was never saved. With PostgreSQL restarting under load
(tests/e2e/test_scale_profile.py), messages answered 200 that way were missing from
their conversations. Here a failed turn answers 503 with a problem body and
Retry-After: Rasa saves a turn only at its end, so nothing of it was kept and sending
the message again is safe. The log line names the error's type: neither the person
nor what they said.

Everything else is Rasa's: the same name (so the same URL), the same body, the same
answer when the turn succeeds, and Rasa's streaming answer (`?stream=true`).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import rasa.utils.endpoints
from rasa.core.channels import rest
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
TURN_FAILED = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "The bot could not answer this message and kept nothing of it; send it again.",
}


class RestInput(rest.RestInput):
    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        module = inspect.getmodule(self)
        webhook = Blueprint(
            f"custom_webhook_{type(self).__name__}", module.__name__ if module else None
        )

        @webhook.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> Any:
            sender_id = await self._extract_sender(request)
            text = self._extract_message(request)
            input_channel = self._extract_input_channel(request)
            metadata = self.get_metadata(request)
            if rasa.utils.endpoints.bool_arg(request, "stream", default=False):
                return response.stream(
                    self.stream_response(on_new_message, text, sender_id, input_channel, metadata),
                    content_type="text/event-stream",
                )
            collector = CollectingOutputChannel()
            message = UserMessage(
                text, collector, sender_id, input_channel=input_channel, metadata=metadata
            )
            try:
                await on_new_message(message)
            except Exception as error:
                # The type only: a database error's text can quote what was said.
                log.error("rest.turn_failed error=%s", type(error).__name__)
                log.debug("rest.turn_failed", exc_info=True)
                return response.text(
                    json.dumps({**TURN_FAILED, "instance": request.path}),
                    status=503,
                    content_type="application/problem+json",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            return response.json(collector.messages)

        return webhook
