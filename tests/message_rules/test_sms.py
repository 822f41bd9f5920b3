"""SMS text rules: compliance keywords, segment counting, splitting long replies."""

from __future__ import annotations

import pytest

from message_rules.sms import Keyword, keyword_of, segments, split_for_sms, units

STOP_WORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


@pytest.mark.parametrize("word", STOP_WORDS)
@pytest.mark.parametrize("spelling", [str.upper, str.lower, str.title, lambda w: f" {w}. "])
def test_every_stop_keyword_in_any_spelling_is_stop(word: str, spelling: object) -> None:
    assert keyword_of(spelling(word)) is Keyword.STOP  # type: ignore[operator]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Stop!", Keyword.STOP), ("stop all", Keyword.STOP), ("Opt-out", Keyword.STOP),
        ("opt out", Keyword.STOP), ("\uff33\uff34\uff2f\uff30", Keyword.STOP), ("start", Keyword.START),
        ("Yes", Keyword.START), ("YES!!", Keyword.START), ("unstop", Keyword.START),
        ("help?", Keyword.HELP), ("Info", Keyword.HELP),
        ("stop texting me", None), ("please stop", None), ("yes please", None),
        ("can you help", None), ("", None), ("stopp", None),
    ],
)  # fmt: skip
def test_only_a_whole_message_keyword_counts(message: str, expected: Keyword | None) -> None:
    assert keyword_of(message) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
        ("€" * 80, 1), ("€" * 81, 2),  # extension characters take two septets
        ("é" * 160, 1),  # é is in the GSM alphabet
        ("ç" * 70, 1), ("ç" * 71, 2), ("ç" * 134, 2), ("ç" * 135, 3),  # ç is not: UCS-2
        ("🙂" * 35, 1), ("🙂" * 36, 2),  # an emoji is two UTF-16 units
    ],
)  # fmt: skip
def test_segments_count_as_carriers_bill(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_a_short_reply_stays_one_message() -> None:
    assert split_for_sms("Hi! What's your name?") == ["Hi! What's your name?"]
    assert split_for_sms("   ") == []


def test_a_long_reply_is_split_between_sentences_within_the_segment_limit() -> None:
    sentences = [f"Sentence number {i} says something useful about the plan." for i in range(30)]
    text = " ".join(sentences)
    messages = split_for_sms(text, max_segments=2)
    assert len(messages) > 1
    assert all(segments(m) <= 2 for m in messages)
    assert all(m.endswith(".") for m in messages)  # never cut inside a sentence
    assert " ".join(messages) == text


def test_a_sentence_longer_than_a_message_is_cut_between_words() -> None:
    text = " ".join(["word"] * 200) + "."
    messages = split_for_sms(text, max_segments=1)
    assert all(units(m) <= 160 for m in messages)
    assert " ".join(messages) == text


def test_an_unbroken_string_is_cut_anywhere_but_nothing_is_lost() -> None:
    text = "x" * 500
    messages = split_for_sms(text, max_segments=1)
    assert [len(m) for m in messages] == [160, 160, 160, 20]
    assert "".join(messages) == text
