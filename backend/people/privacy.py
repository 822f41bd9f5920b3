"""The GDPR requests as use cases, for the API and the console alike: export everything
held about a person, and erase them. Both reach Rasa first (backend.people.erasure says
what is reached and how); both are audited under whoever asked."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.conversations.rasa_client import RasaClient, RasaUnavailable
from backend.core import audit
from backend.core.clock import Clock
from backend.core.logs import get_logger
from backend.people import erasure
from backend.people.profiles import ProfileDirectory
from backend.scoring import rules as scoring

log = get_logger(__name__)


class RasaAway(Exception):
    """Rasa's tracker store could not be reached: nothing was exported or erased."""

    def __init__(self, what: str, error: RasaUnavailable) -> None:
        super().__init__(
            f"{what} could not be reached in Rasa's tracker store: {error}. Nothing was "
            "changed; try again."
        )


@dataclass
class Privacy:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    directory: ProfileDirectory
    rasa: RasaClient
    rules: scoring.ScoringRules

    async def export(self, profile_id: uuid.UUID, actor: audit.Actor) -> dict[str, Any] | None:
        """Everything held about the person, their conversations' transcripts from Rasa
        included (`RasaAway` if Rasa cannot be reached: an export is whole or not given);
        None if there is no such person."""
        async with self.sessions() as session:
            profile = await self.directory.resolve(session, profile_id)
            if profile is None:
                return None
            conversations = await erasure.conversations_of(session, profile)
        try:
            transcripts = (
                await erasure.transcripts(self.rasa, conversations)
                if self.rasa.configured
                else {"unavailable": "PARLEY_RASA_TOKEN is not set, so Rasa cannot be read"}
            )
        except RasaUnavailable as error:
            raise RasaAway("The transcripts", error) from error
        async with self.sessions.begin() as session:
            profile = await self.directory.resolve(session, profile_id)
            if profile is None:
                return None
            document = await erasure.export(session, profile)
            document["profile"]["score"] = scoring.current_score(
                profile, self.rules, self.clock.now()
            )
            document["conversations"] = transcripts
            await audit.record(session, self.clock, actor, "export_profile", str(profile.id))
        return document

    async def erase(self, profile_id: uuid.UUID, actor: audit.Actor) -> bool:
        """Erase the person everywhere: their conversations in Rasa's tracker store first
        (`RasaAway`, and nothing erased, if Rasa cannot be reached), then everything the
        backend holds, leaving the tombstone. False if there is no such person."""
        async with self.sessions() as session:
            profile = await self.directory.resolve(session, profile_id)
            if profile is None:
                return False
            conversations = await erasure.conversations_of(session, profile)
        reached: int | str
        if self.rasa.configured:
            try:
                reached = await erasure.erase_conversations(self.rasa, conversations)
            except RasaUnavailable as error:
                raise RasaAway("The person's conversations", error) from error
        else:
            reached = "not reached: PARLEY_RASA_TOKEN is not set"
            log.warning("profile.conversations_not_erased", reason=reached)
        async with self.sessions.begin() as session:
            profile = await self.directory.resolve(session, profile_id)
            if profile is None:
                return False
            erased_id = str(profile.id)
            remembered = await erasure.erase(
                session, profile, self.directory.erasure_key, self.clock
            )
            await audit.record(
                session, self.clock, actor, "erase_profile", erased_id,
                identities_remembered_as_hashes=remembered, conversations=len(conversations),
                conversation_events_erased=reached,
            )  # fmt: skip
        log.info("profile.erased", profile_id=erased_id)
        return True
