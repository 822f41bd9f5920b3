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

import itertools
import json

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY


class ParleySQLTrackerStore(SQLTrackerStore):
    async def save(self, tracker: DialogueStateTracker) -> None:
        """Publish and store the events that are not stored yet, as Rasa's does."""
        with self.session_scope() as session:
            stored = self._event_query(
                session, tracker.sender_id, fetch_events_from_all_sessions=False
            ).count()
            new = list(itertools.islice(tracker.events, stored, None))
            if self.event_broker is not None:
                await self._stream_new_events(self.event_broker, new, tracker.sender_id)
            for event in new:
                # The row Rasa's `save` writes for an event.
                data = event.as_dict()
                session.add(
                    self.SQLEvent(
                        sender_id=tracker.sender_id,
                        type_name=event.type_name,
                        timestamp=data.get("timestamp"),
                        intent_name=data.get("parse_data", {})
                        .get("intent", {})
                        .get(INTENT_NAME_KEY),
                        action_name=data.get("name"),
                        data=json.dumps(data),
                    )
                )
            session.commit()
