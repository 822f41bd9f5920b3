"""Mailgun's webhooks, as Mailgun documents them: a JSON body with `signature`
(`timestamp`, `token`, `signature`: the hex HMAC-SHA256 of timestamp + token under the
account's HTTP webhook signing key) and `event-data`. A request is taken only if the
signature matches (compared in constant time), its timestamp is within `MAX_AGE` of
now, and its token was not seen before in that time (a replay is refused). What Parley
acts on: `failed` (severity `permanent`: a hard bounce; `temporary`: a soft one) and
`complained`; other events are acknowledged and left."""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backend.core.identities import InvalidAddress, normalise_email
from backend.messaging.email_feedback import Feedback, Kind

MAX_AGE = timedelta(minutes=5)
SOURCE = "mailgun"


class NotFromMailgun(ValueError):
    """The request's signature does not hold; the message says why."""


def signature(key: str, timestamp: str, token: str) -> str:
    return hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


@dataclass
class MailgunWebhook:
    signing_key: str
    # Tokens seen within MAX_AGE (per process; a replay to another replica within the
    # window is still refused by the timestamp once it is older).
    _seen: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def verify(self, body: Any, now: datetime) -> dict[str, Any]:
        """The event-data of a genuine, fresh, first-seen request. Raises NotFromMailgun."""
        signed = body.get("signature") if isinstance(body, dict) else None
        if not isinstance(signed, dict):
            raise NotFromMailgun("no signature object")
        timestamp, token, given = (signed.get(k) for k in ("timestamp", "token", "signature"))
        if not all(isinstance(v, str) and v for v in (timestamp, token, given)):
            raise NotFromMailgun("the signature needs timestamp, token and signature")
        assert isinstance(timestamp, str) and isinstance(token, str) and isinstance(given, str)
        if not hmac.compare_digest(signature(self.signing_key, timestamp, token), given):
            raise NotFromMailgun("the signature does not match")
        try:
            at = float(timestamp)
        except ValueError:
            raise NotFromMailgun("the timestamp is not a number") from None
        if abs(now.timestamp() - at) > MAX_AGE.total_seconds():
            raise NotFromMailgun("the timestamp is too old (or too far ahead)")
        while (
            self._seen
            and next(iter(self._seen.values())) < now.timestamp() - 2 * MAX_AGE.total_seconds()
        ):
            self._seen.popitem(last=False)
        if token in self._seen:
            raise NotFromMailgun("this token was used before (a replay)")
        self._seen[token] = now.timestamp()
        event = body.get("event-data")
        if not isinstance(event, dict):
            raise NotFromMailgun("no event-data object")
        return event


def feedback(event: dict[str, Any]) -> Feedback | None:
    """What an event means to Parley; None for events it does not act on."""
    kind = event.get("event")
    recipient = event.get("recipient")
    if kind not in ("failed", "complained") or not isinstance(recipient, str):
        return None
    try:
        address = normalise_email(recipient)
    except InvalidAddress:
        return None
    message = event.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = headers.get("message-id") if isinstance(headers, dict) else None
    status = event.get("delivery-status")
    detail: dict[str, Any] = {"event_id": event.get("id")}
    if isinstance(status, dict):
        detail |= {"code": status.get("code"), "description": status.get("description")
                   or status.get("message")}  # fmt: skip
    if event.get("reason"):
        detail["reason"] = event.get("reason")
    return Feedback(
        Kind.COMPLAINT if kind == "complained" else Kind.BOUNCE, address, SOURCE,
        permanent=event.get("severity") != "temporary",
        message_id=message_id if isinstance(message_id, str) else None, detail=detail,
    )  # fmt: skip
