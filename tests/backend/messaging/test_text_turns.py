"""Every recorded text is answered once: claimed in order per sender, tried again after a
failure or a lost lease, given up (and logged) only after every attempt. The answers
here are recorded in-process; tests/bot/test_sms_channel.py runs the same queue against
the real SMS channel, and tests/e2e/test_sms_faults.py against killed processes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from structlog.testing import capture_logs

from backend.core.clock import FixedClock
from backend.core.database import create_engine, create_session_factory
from backend.core.models import Message
from backend.core.settings import Settings
from backend.messaging.text_turns import AnswerFailed, PendingText, TextTurns


@dataclass
class Answers:
    """Records each text it is asked to answer; fails as told."""

    asked: list[int] = field(default_factory=list)
    failing: dict[int, AnswerFailed] = field(default_factory=dict)

    async def answer(self, text: PendingText) -> None:
        self.asked.append(text.id)
        if text.id in self.failing:
            raise self.failing[text.id]


@pytest.fixture
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.resolved_database_url)
    try:
        yield create_session_factory(engine)
    finally:
        await engine.dispose()


async def record(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock, sender: str, body: str,
    keyword: str | None = None,
) -> int:  # fmt: skip
    now = clock.now()
    async with sessions.begin() as session:
        row = Message(
            direction="inbound", channel="sms", to_address="+15005550006", from_address=sender,
            body=body, media={}, status="received", provider_sid="SM" + uuid.uuid4().hex,
            keyword=keyword, batch_id=uuid.uuid4(), turn="pending", turn_due_at=now,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(row)
        await session.flush()
        return row.id


async def turn_of(sessions: async_sessionmaker[AsyncSession], message_id: int) -> tuple[str, int]:
    async with sessions() as session:
        row = await session.get(Message, message_id)
        assert row is not None and row.turn is not None
        return row.turn, row.turn_attempts


def turns(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock, bot: Answers,
    keywords: Answers | None = None, **options: object,
) -> TextTurns:  # fmt: skip
    return TextTurns(sessions=sessions, clock=clock, keywords=keywords or Answers(), bot=bot,
                     **options)  # type: ignore[arg-type]  # fmt: skip


A, B = "+14155550101", "+14155550102"


async def test_a_senders_texts_are_claimed_one_at_a_time_in_the_order_sent(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    first, second = await record(sessions, clock, A, "one"), await record(sessions, clock, A, "two")
    other = await record(sessions, clock, B, "hello")
    queue = turns(sessions, clock, Answers())
    claimed = [t.id for t in await queue.claim(10)]
    assert claimed == [first, other]  # "two" waits for "one"
    assert await queue.claim(10) == []  # leased meanwhile: nobody else takes them
    await queue.answer(await _pending(sessions, first))
    assert [t.id for t in await queue.claim(10)] == [second]


async def test_a_keywords_confirmation_waits_for_no_turn_of_the_bot(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    chat = await record(sessions, clock, A, "hi")
    stop = await record(sessions, clock, A, "STOP", keyword="stop")
    later = await record(sessions, clock, A, "are you there?")
    keywords = Answers()
    queue = turns(sessions, clock, Answers(), keywords)
    assert [t.id for t in await queue.claim(10)] == [chat, stop]
    assert later not in [t.id for t in await queue.claim(10)]


async def test_without_a_bot_only_keywords_are_answered(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    await record(sessions, clock, A, "hi")
    stop = await record(sessions, clock, B, "STOP", keyword="stop")
    queue = TextTurns(sessions=sessions, clock=clock, keywords=Answers(), bot=None)
    assert [t.id for t in await queue.claim(10)] == [stop]


async def test_a_failed_answer_is_tried_again_later_and_given_up_after_every_attempt(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    text = await record(sessions, clock, A, "hi")
    bot = Answers(failing={text: AnswerFailed("Rasa answered 503")})
    queue = turns(sessions, clock, bot, max_attempts=3)
    for attempt, wait in ((1, 1), (2, 2)):
        [claimed] = await queue.claim(10)
        await queue.answer(claimed)
        assert await turn_of(sessions, text) == ("pending", attempt)
        clock.advance(timedelta(seconds=wait) - timedelta(milliseconds=1))
        assert await queue.claim(10) == []  # not yet: 1 s, then 2 s, then …
        clock.advance(timedelta(milliseconds=1))
    [claimed] = await queue.claim(10)
    with capture_logs() as logs:
        await queue.answer(claimed)
    assert await turn_of(sessions, text) == ("failed", 3)
    assert bot.asked == [text, text, text]
    # An operator hears of it: a text nobody answered.
    assert [(e["event"], e["log_level"]) for e in logs] == [("sms.turn_given_up", "error")]


async def test_an_answer_that_cannot_succeed_is_given_up_at_once(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    text = await record(sessions, clock, A, "hi")
    queue = turns(sessions, clock, Answers(failing={text: AnswerFailed("400", final=True)}))
    [claimed] = await queue.claim(10)
    await queue.answer(claimed)
    assert await turn_of(sessions, text) == ("failed", 1)


async def test_a_claim_whose_lease_ran_out_is_claimed_again(
    sessions: async_sessionmaker[AsyncSession], clock: FixedClock
) -> None:
    """The backend that claimed it died mid-answer: after the lease, anyone takes it."""
    text = await record(sessions, clock, A, "hi")
    queue = turns(sessions, clock, Answers(), lease=timedelta(seconds=120))
    assert [t.id for t in await queue.claim(10)] == [text]
    clock.advance(timedelta(seconds=119))
    assert await queue.claim(10) == []
    clock.advance(timedelta(seconds=1))
    [again] = await queue.claim(10)
    assert (again.id, again.attempt) == (text, 2)
    await queue.answer(again)
    assert await turn_of(sessions, text) == ("done", 2)


async def _pending(sessions: async_sessionmaker[AsyncSession], message_id: int) -> PendingText:
    async with sessions() as session:
        row = await session.scalar(select(Message).where(Message.id == message_id))
        assert row is not None
        return PendingText(row.id, None, row.provider_sid or "", row.from_address,
                           row.to_address, row.body, [], row.keyword, row.turn_attempts)  # fmt: skip
