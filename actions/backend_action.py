"""The base of every action that talks to the backend."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod

from rasa_sdk import Action

from actions.backend_client import BackendClient, shared_client


class BackendAction(Action, metaclass=ABCMeta):
    """Tests hand an action its client; on the action server it uses the shared one.

    Abstract, so rasa-sdk does not register it as an action of its own.
    """

    def __init__(self, client: BackendClient | None = None) -> None:
        self._client = client

    @property
    def backend(self) -> BackendClient:
        return self._client or shared_client()

    @abstractmethod
    def name(self) -> str: ...
