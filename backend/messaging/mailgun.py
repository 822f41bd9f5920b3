"""Mailgun's webhooks, as Mailgun documents them, each signed the same way: `timestamp`,
`token` and `signature`, the hex HMAC-SHA256 of timestamp + token under the account's
HTTP webhook signing key. A request is taken only if the signature matches (compared in
constant time), its timestamp is within `MAX_AGE` of now, and its token was not seen
before in that time (a replay is refused).

- Events: a JSON body with a `signature` object and `event-data`. What Parley acts on:
  `failed` (severity `permanent`: a hard bounce; `temporary`: a soft one) and
  `complained`; other events are acknowledged and left.
- Inbound e-mail, from a route's `forward()` action ("fully parsed"): a form
  (urlencoded, or multipart with attachments) with the signature fields at its top
  level, `from`, `recipient`, `subject`, `body-plain`, `stripped-text` (the reply
  without the quoted e-mail) and `message-headers` (a JSON list of name and value)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import getaddresses, parseaddr
from typing import Any

from backend.core.identities import InvalidAddress, normalise_email
from backend.messaging.email_feedback import Feedback, Kind
from backend.messaging.email_inbound import InboundEmail

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
        """The event-data of a genuine, fresh, first-seen event. Raises NotFromMailgun."""
        signed = body.get("signature") if isinstance(body, dict) else None
        if not isinstance(signed, dict):
            raise NotFromMailgun("no signature object")
        self.check(signed, now)
        event = body.get("event-data")
        if not isinstance(event, dict):
            raise NotFromMailgun("no event-data object")
        return event

    def check(self, signed: Mapping[str, Any], now: datetime) -> None:
        """Whether `timestamp`, `token` and `signature` in `signed` are Mailgun's, fresh
        and first seen. Raises NotFromMailgun."""
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


class Unreadable(ValueError):
    """An inbound e-mail Parley cannot take (no usable sender): Mailgun is told 406,
    which it does not retry."""


def inbound_email(form: Mapping[str, Any]) -> InboundEmail:
    """A route's forwarded e-mail as Parley records it. Raises Unreadable."""
    headers = _headers(form.get("message-headers"))

    def field(name: str) -> str:
        value = form.get(name)
        return value if isinstance(value, str) else ""

    def header(name: str) -> str | None:
        value = headers.get(name.lower()) or form.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    _, written = parseaddr(field("from") or field("sender"))
    try:
        sender = normalise_email(written)
    except InvalidAddress:
        raise Unreadable(f"no usable sender address ({written!r})") from None
    references = [a for _, a in getaddresses([header("References") or ""]) if a]
    answers = header("In-Reply-To") or (f"<{references[-1]}>" if references else None)
    text = field("stripped-text").strip() or field("body-plain").strip()
    return InboundEmail(
        sender=sender, recipient=field("recipient"), subject=field("subject").strip(),
        text=text, message_id=header("Message-Id"), in_reply_to=answers,
    )  # fmt: skip


def _headers(value: object) -> dict[str, str]:
    """`message-headers`: a JSON list of [name, value], names compared without case."""
    try:
        pairs = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return {}
    found: dict[str, str] = {}
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair):
            found.setdefault(pair[0].lower(), pair[1])
    return found


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
