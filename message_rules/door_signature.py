"""The one door's signature on a message it pushes into a web chat conversation.

Rasa's HTTP API lets anyone holding its token push a bot message to a web page
(`?output_channel=webchat`, `/execute`, `/trigger_intent`). The web chat channel sends
such a push only if its metadata carries this signature, which only the backend's web
door makes (backend/messaging/web_door.py), after consent and the guards allowed it; a
push without it is dropped (channels/webchat.py). The key is the web chat secret both
runtimes already share.
"""

from __future__ import annotations

import hashlib
import hmac

# The metadata key of a bot message that carries the signature.
METADATA_KEY = "parley_door"


def sign(secret: str, conversation_id: str, text: str) -> str:
    """The signature of `text` pushed into `conversation_id`."""
    message = f"parley-door-v1\n{conversation_id}\n{text}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def is_signed(secret: str | None, conversation_id: str, text: str, signature: object) -> bool:
    """Whether `signature` is the door's for this text in this conversation."""
    if not secret or not isinstance(signature, str):
        return False
    return hmac.compare_digest(sign(secret, conversation_id, text), signature)
