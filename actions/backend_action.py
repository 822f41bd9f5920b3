"""The base of every action that talks to the backend."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from rasa_sdk import Action, Tracker

from bot.backend_client import BackendClient, shared_client
from bot.business import Business, load_business
from bot.clock import Clock, system_clock
from bot.identity import identity_of


class BackendAction(Action, metaclass=ABCMeta):
    """Tests hand an action its client, clock and business; on the action server it uses
    the shared client, the system clock and data/business.yml.

    Abstract, so rasa-sdk does not register it as an action of its own.
    """

    def __init__(
        self,
        client: BackendClient | None = None,
        clock: Clock = system_clock,
        business: Business | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._business = business

    @property
    def backend(self) -> BackendClient:
        return self._client or shared_client()

    @property
    def business(self) -> Business:
        return self._business or load_business()

    async def profile_id(self, tracker: Tracker) -> str:
        """The person's profile: the one noted in the conversation, else the one behind
        this channel identity (created if new)."""
        known = tracker.get_slot("profile_id")
        if known:
            return str(known)
        kind, address = identity_of(tracker)
        return (await self.backend.identify(kind, address)).profile.id

    @abstractmethod
    def name(self) -> str: ...
