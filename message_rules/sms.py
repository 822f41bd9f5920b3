"""Text rules of SMS, shared by the SMS channel and the backend (standard library only).

- Compliance keywords (STOP, START, HELP and their synonyms), matched on the whole
  message, ignoring case, spaces and punctuation, before any NLU sees it.
- Segments as carriers bill them: GSM-7 messages carry 160 characters, or 153 per part
  when split (the extension characters ^{}\\[~]|€ take two); anything else is UCS-2,
  70 UTF-16 units, or 67 per part.
- Long replies split at sentence boundaries into messages of at most a few segments.
"""

from __future__ import annotations

import re
import unicodedata
from enum import Enum

# The GSM 03.38 default alphabet and its extension table.
GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = "^{}\\[~]|€\f"
_GSM = frozenset(GSM_BASIC + GSM_EXTENDED)


class Keyword(str, Enum):  # Python 3.10 (the bot runtime) has no StrEnum
    STOP = "stop"
    START = "start"
    HELP = "help"


KEYWORDS = {
    **dict.fromkeys(
        ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"],
        Keyword.STOP,
    ),
    **dict.fromkeys(["START", "YES", "UNSTOP"], Keyword.START),
    **dict.fromkeys(["HELP", "INFO"], Keyword.HELP),
}


def keyword_of(message: str) -> Keyword | None:
    """The compliance keyword the whole message is ("Stop.", " stop all ", "Opt-out!")."""
    letters = "".join(c for c in unicodedata.normalize("NFKC", message) if c.isalnum())
    return KEYWORDS.get(letters.upper())


def is_gsm7(text: str) -> bool:
    return all(c in _GSM for c in text)


def units(text: str) -> int:
    """Length as the carrier counts it: septets for GSM-7, UTF-16 units otherwise."""
    if is_gsm7(text):
        return len(text) + sum(1 for c in text if c in GSM_EXTENDED)
    return len(text.encode("utf-16-le")) // 2


def segments(text: str) -> int:
    """How many SMS segments `text` takes."""
    single, part = (160, 153) if is_gsm7(text) else (70, 67)
    length = units(text)
    return 1 if length <= single else -(-length // part)


_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def split_for_sms(text: str, max_segments: int = 3) -> list[str]:
    """`text` as messages of at most `max_segments` segments each, split between
    sentences where possible, else between words, else anywhere."""
    text = text.strip()
    if not text or segments(text) <= max_segments:
        return [text] if text else []
    return _pack(_pieces(text, max_segments), max_segments)


def _pieces(text: str, max_segments: int) -> list[str]:
    """Sentences, with any sentence too long for one message cut between words."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        if segments(sentence) <= max_segments:
            pieces.append(sentence)
            continue
        *whole, current = _pack(sentence.split(), max_segments)
        pieces += whole
        while segments(current) > max_segments:  # one "word" longer than a message
            cut = _longest_prefix(current, max_segments)
            pieces.append(current[:cut])
            current = current[cut:]
        if current:
            pieces.append(current)
    return pieces


def _pack(parts: list[str], max_segments: int) -> list[str]:
    """`parts` joined by spaces into as few messages of `max_segments` as they go."""
    messages: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current} {part}".strip()
        if current and segments(candidate) > max_segments:
            messages.append(current)
            current = part
        else:
            current = candidate
    return [*messages, current] if current else messages


def _longest_prefix(text: str, max_segments: int) -> int:
    end = len(text)
    while end > 1 and segments(text[:end]) > max_segments:
        end -= 1
    return end
