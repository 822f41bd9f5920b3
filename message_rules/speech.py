"""Text spoken on a phone call, and what the voice channel's `<Gather>` and `<Redirect>`
URLs carry; shared by the voice channel and the backend's outbound calls (standard
library only).

- `speakable`: text as a voice should read it (markdown marks, emoji and link addresses
  gone, lines joined as sentences).
- `last_question`: what to re-ask after a silence (the last sentences, ~300 characters).
- `Prompt`: the buttons and the question of the current turn, carried in the query of
  the voice channel's gather URL (`buttons`, `prompt`, and `silence` on the redirect that
  follows a silent `<Gather>`). Twilio signs the full URL, so the query cannot be altered.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

MAX_KEYPAD_CHOICES = 9  # one key per choice
PROMPT_CHARS = 300  # at most this much of the last message is re-asked after a silence

_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]+\)")
_URL = re.compile(r"https?://(?:www\.)?(\S+?)(?=[.,;:!?)]*(?:\s|$))")
_STRONG = re.compile(r"(\*\*|__)(\S(?:.*?\S)?)\1")
_EMPHASIS = re.compile(r"(?<![\w*])\*(\S(?:.*?\S)?)\*(?![\w*])|(?<!\w)_(\S(?:.*?\S)?)_(?!\w)")
_CODE = re.compile(r"`([^`]*)`")
_LINE_START = re.compile(r"^\s*(?:#+|[-*•>]|\d+[.)])\s+")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def speakable(text: str) -> str:
    """`text` as a voice should read it: markdown marks, emoji and link addresses gone
    (a bare address is read without its `https://`), lines joined as sentences."""
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(r"\1", text)
    text = _STRONG.sub(r"\2", text)
    text = _EMPHASIS.sub(lambda m: m.group(1) or m.group(2), text)
    text = _CODE.sub(r"\1", text)
    text = "".join(
        c
        for c in text
        if unicodedata.category(c) not in ("So", "Cs", "Co") and c not in "\ufe0f\u200d"
    )
    lines = [_SPACES.sub(" ", _LINE_START.sub("", line)).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return " ".join([*(as_sentence(line) for line in lines[:-1]), *lines[-1:]])


def as_sentence(text: str) -> str:
    """`text` ending as a sentence does (a full stop added if it has no end mark)."""
    return text if not text or text[-1] in ".!?…:;," else f"{text}."


def last_question(spoken: Sequence[str]) -> str:
    """What to re-ask after a silence: the last sentences of the last message, up to
    about PROMPT_CHARS (the question, and any choices, come last)."""
    if not spoken:
        return ""
    kept: list[str] = []
    for sentence in reversed(_SENTENCE_END.split(spoken[-1])):
        if kept and len(" ".join([sentence, *kept])) > PROMPT_CHARS:
            break
        kept.insert(0, sentence)
    return " ".join(kept)


@dataclass(frozen=True)
class Choice:
    """A button of the current prompt: what is read out, and what Rasa receives."""

    title: str
    payload: str


@dataclass(frozen=True)
class Prompt:
    """What the person is being asked, carried in the (signed) URLs of the TwiML."""

    choices: list[Choice]
    question: str

    def query(self, silences: int | None = None) -> str:
        params: dict[str, str] = {}
        if self.choices:
            params["buttons"] = json.dumps(
                [[c.title, c.payload] for c in self.choices], separators=(",", ":")
            )
        if self.question:
            params["prompt"] = self.question
        if silences is not None:
            params["silence"] = str(silences)
        return urlencode(params, quote_via=_quote)

    @classmethod
    def from_query(cls, args: Mapping[str, Any]) -> Prompt:
        try:
            pairs = json.loads(first_value(args, "buttons") or "[]")
            choices = [Choice(str(title), str(payload)) for title, payload in pairs]
        except (ValueError, TypeError):
            choices = []
        return cls(choices[:MAX_KEYPAD_CHOICES], first_value(args, "prompt") or "")


def with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _quote(value: str, *_: Any) -> str:
    """Percent-encodes only what a query value must not contain, so that no client or
    proxy on the way has a reason to re-encode the URL Twilio signs."""
    return quote(value, safe="!$'()*,:@/?")


def first_value(args: Mapping[str, Any], name: str) -> str | None:
    """A query argument's (first) value, from a plain mapping or one of lists."""
    value = args.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else str(value)
