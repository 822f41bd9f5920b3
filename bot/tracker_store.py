"""Rasa's SQL tracker store, saving a conversation without reading it back first.

With an event broker, Rasa's `SQLTrackerStore.save` finds the events to publish by
retrieving the conversation's current session (every stored event read, decoded and
replayed into a tracker) and then, to find the events to store, counts those same
rows. The new events are the same in both cases: the tracker's events after the stored
ones. This store counts once and uses the count for both, so a save costs one query
however long the conversation is, instead of a query and a replay of it.

Everything else is Rasa's: the table, the queries, reading trackers and the events the
broker gets. bot/endpoints.yml and bot/endpoints.scale.yml name it as the tracker
store (`type: bot.tracker_store.ParleySQLTrackerStore`, with the same settings as
Rasa's `type: SQL`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker


class ParleySQLTrackerStore(SQLTrackerStore):
    async def stream_events(self, tracker: DialogueStateTracker) -> None:
        """Nothing here: `save` publishes the events it stores (`_additional_events`)."""

    def _additional_events(self, session: Any, tracker: DialogueStateTracker) -> Iterator[Any]:
        """Rasa's events to store (those after the stored ones, by one count), handed to
        the event broker before Rasa's `save` writes them, as Rasa's own store does."""
        new = list(super()._additional_events(session, tracker))
        if self.event_broker is not None:
            for event in new:
                self.event_broker.publish({"sender_id": tracker.sender_id, **event.as_dict()})
        return iter(new)
