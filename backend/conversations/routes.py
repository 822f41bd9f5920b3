"""Conversation routes: a conversation's transcript, read from Rasa's tracker."""

from __future__ import annotations

from dataclasses import asdict

from aiohttp import web

from backend.api.bodies import respond
from backend.api.keys import RASA
from backend.api.problems import Problem
from backend.conversations.rasa_client import RasaUnavailable
from backend.conversations.schemas import Transcript, TranscriptLine
from backend.conversations.transcripts import transcript


async def conversation_transcript(request: web.Request) -> web.Response:
    conversation_id = request.match_info["conversation_id"]
    try:
        events = await request.app[RASA].conversation_events(conversation_id)
    except RasaUnavailable as error:
        raise Problem(
            503, f"The conversation could not be read from Rasa: {error}.",
            type_="rasa-unavailable", headers={"Retry-After": "5"},
        ) from error  # fmt: skip
    lines = [TranscriptLine(**asdict(line)) for line in transcript(events)]
    if not lines:
        raise Problem(
            404, f"There is no conversation {conversation_id!r}.", type_="conversation-not-found"
        )
    return respond(Transcript(conversation_id=conversation_id, lines=lines))
