"""Twilio's webhook requests as Twilio documents them, for both runtimes' tests
(standard library only), written from Twilio's documentation rather than from the
local emulator, so that the two cannot share a blind spot.

- `twilio_signature`: the algorithm of Twilio's "Webhooks security" page, written from
  its description: the full URL, then every POST parameter's name and value sorted by
  name (blank values included), HMAC-SHA1 keyed with the auth token, base64.
- The parameters Twilio posts for an incoming SMS, an image-only MMS and an incoming
  call ("Twilio's request to your incoming message Webhook URL"; "Twilio's request to
  your application" for Voice), with the fields Twilio leaves blank when it has no
  value (geography it could not look up, an MMS's Body).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlencode

Params = list[tuple[str, str]]

ACCOUNT_SID = "AC" + "0" * 32
BUSINESS = "+15005550006"


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def form_body(params: Params) -> bytes:
    """The body as Twilio sends it: form-encoded UTF-8, spaces as '+', '+' as %2B."""
    return urlencode(params).encode()


def incoming_sms(sid: str, sender: str, body: str, to: str = BUSINESS) -> Params:
    """An SMS as Twilio posts it to "A message comes in", in Twilio's order."""
    return [
        ("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", sid), ("NumMedia", "0"),
        ("ToCity", ""), ("FromZip", ""), ("SmsSid", sid), ("FromState", "CA"),
        ("SmsStatus", "received"), ("FromCity", ""), ("Body", body), ("FromCountry", "US"),
        ("To", to), ("MessagingServiceSid", ""), ("ToZip", ""), ("NumSegments", "1"),
        ("MessageSid", sid), ("AccountSid", ACCOUNT_SID), ("From", sender),
        ("ApiVersion", "2010-04-01"),
    ]  # fmt: skip


def image_only_mms(sid: str, sender: str, to: str = BUSINESS) -> Params:
    """A picture with no words: Body is blank, and Twilio signs it blank."""
    media = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media/ME1"
    params = [(n, "1" if n == "NumMedia" else v) for n, v in incoming_sms(sid, sender, "", to)]
    return [*params, ("MediaContentType0", "image/jpeg"), ("MediaUrl0", media)]


def incoming_call(sid: str, caller: str, to: str = BUSINESS) -> Params:
    """A call as Twilio posts it to "A call comes in"."""
    return [
        ("Called", to), ("ToState", "CA"), ("CallerCountry", "US"), ("Direction", "inbound"),
        ("CallerState", "CA"), ("ToZip", ""), ("CallSid", sid), ("To", to), ("CallerZip", ""),
        ("ToCountry", "US"), ("CallToken", ""), ("CalledZip", ""), ("ApiVersion", "2010-04-01"),
        ("CalledCity", ""), ("CallStatus", "ringing"), ("From", caller),
        ("AccountSid", ACCOUNT_SID), ("CalledCountry", "US"), ("CallerCity", ""),
        ("ToCity", ""), ("FromCountry", "US"), ("Caller", caller), ("FromCity", ""),
        ("CalledState", "CA"), ("FromZip", ""), ("FromState", "CA"),
    ]  # fmt: skip
