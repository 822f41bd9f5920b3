"""Every text a person sends is answered exactly once, whatever crashes meanwhile.

A text is recorded (backend.messaging.inbound) before Twilio is told it arrived, with its turn
`pending`. `TextTurns` then answers it: a STOP, START or HELP text with its one
confirmation through the one door, any other text by handing it to the bot (Rasa's SMS
channel runs the turn and sends the bot's replies back through the door). Only when
that is confirmed is the turn `done`.

- **Claims with a lease.** A claim moves the text's `turn_due_at` a lease ahead; if the
  answer is not confirmed by then (the backend, Rasa or the action server died), any
  backend replica claims it again. Repeating a turn is harmless: Rasa's channel skips a
  text that is already in the conversation, and every reply carries a send key, so the
  door never sends it twice.
- **In order.** Only a sender's oldest text waiting for the bot can be claimed, so one
  person's texts reach the bot in the order they arrived; at most `concurrency` texts
  are answered at once. A keyword's confirmation waits for nothing: its consent change
  was made when the text was recorded.
- **Retries.** A failed attempt (the bot unreachable, Twilio unreachable) is tried again
  after 1, 2, 4 … 60 seconds; after `max_attempts` the text is given up, which is logged
  as an error for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from backend.conversations.rasa_client import RasaClient, RasaUnavailable
from backend.core.clock import Clock
from backend.core.identities import IdentityKind, redact
from backend.core.logs import get_logger
from backend.core.models import Message

log = get_logger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"
MAX_BACKOFF = timedelta(seconds=60)


@dataclass(frozen=True)
class PendingText:
    """A text whose answer is owed, as claimed."""

    id: int
    profile_id: uuid.UUID | None
    sid: str
    sender: str
    to: str
    body: str
    media_urls: list[str]
    keyword: str | None
    attempt: int


class AnswerFailed(Exception):
    """This attempt did not answer the text. `final`: trying again cannot help."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


class Answerer(Protocol):
    async def answer(self, text: PendingText) -> None:
        """Answer the text (idempotently: it may have been answered already), or raise
        `AnswerFailed`."""


@dataclass
class TextTurns:
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    keywords: Answerer  # confirms STOP, START and HELP (backend.messaging.inbound)
    bot: Answerer | None  # the bot's turn through Rasa; None: texts wait for one
    concurrency: int = 4
    lease: timedelta = timedelta(seconds=120)
    max_attempts: int = 30
    poll_seconds: float = 1.0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def nudge(self) -> None:
        """A text was recorded, or a turn ended: look for work now, not at the next poll."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Answer pending texts until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            free = self.concurrency - len(self._in_flight)
            claimed: list[PendingText] = []
            if free > 0:
                try:
                    claimed = await self.claim(free)
                except Exception as error:  # the database is away: try again later
                    log.warning("sms.turns_claim_failed", error=f"{type(error).__name__}: {error}")
            for text in claimed:
                task = asyncio.create_task(self.answer(text), name=f"text-turn-{text.id}")
                self._in_flight.add(task)
                task.add_done_callback(self._finished)
            if len(claimed) < free or not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
        await self.settled()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        self.nudge()  # a slot is free, and the sender's next text may now be claimed

    async def settled(self) -> None:
        """Wait for the answers in progress (tests, shutdown)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def claim(self, limit: int) -> list[PendingText]:
        """Lease up to `limit` due texts, each its sender's oldest pending one."""
        now = self.clock.now()
        earlier = aliased(Message)
        # A sender's texts reach the bot in order; a keyword's confirmation waits for
        # nothing (its consent change was made when it was recorded).
        in_order = or_(
            Message.keyword.is_not(None),
            ~exists().where(
                earlier.turn == PENDING,
                earlier.keyword.is_(None),
                earlier.from_address == Message.from_address,
                earlier.id < Message.id,
            ),
        )
        only_keywords = [] if self.bot is not None else [Message.keyword.is_not(None)]
        query = (
            select(Message.id)
            .where(Message.turn == PENDING, Message.turn_due_at <= now, in_order, *only_keywords)
            .order_by(Message.id)
            .limit(limit)
        )
        claimed: list[PendingText] = []
        async with self.sessions.begin() as session:
            for message_id in list(await session.scalars(query)):
                # Only if no other replica claimed it since it was read.
                row = await session.scalar(
                    update(Message)
                    .where(
                        Message.id == message_id,
                        Message.turn == PENDING,
                        or_(Message.turn_due_at.is_(None), Message.turn_due_at <= now),
                    )
                    .values(turn_due_at=now + self.lease, turn_attempts=Message.turn_attempts + 1)
                    .returning(Message)
                    .execution_options(synchronize_session=False)
                )
                if row is not None:
                    claimed.append(_pending(row))
        return claimed

    async def answer(self, text: PendingText) -> None:
        """Answer one claimed text and record the outcome."""
        answerer = self.keywords if text.keyword else self.bot
        try:
            if answerer is None:
                raise AnswerFailed("no bot is configured (PARLEY_RASA_TOKEN)")
            await answerer.answer(text)
        except AnswerFailed as failed:
            await self._failed(text, str(failed), failed.final)
            return
        except Exception as error:  # an unexpected error is one failed attempt, not a crash
            log.exception("sms.turn_crashed", message_id=text.id)
            await self._failed(text, f"{type(error).__name__}: {error}", final=False)
            return
        await self._set(text.id, turn=DONE, turn_due_at=None)
        log.info("sms.answered", message_id=text.id, attempt=text.attempt,
                 keyword=text.keyword)  # fmt: skip

    async def _failed(self, text: PendingText, reason: str, final: bool) -> None:
        sender = redact(IdentityKind.SMS, text.sender)
        if final or text.attempt >= self.max_attempts:
            await self._set(text.id, turn=FAILED, turn_due_at=None)
            log.error("sms.turn_given_up", message_id=text.id, attempts=text.attempt,
                      sender=sender, reason=reason)  # fmt: skip
            return
        wait = min(timedelta(seconds=2 ** (text.attempt - 1)), MAX_BACKOFF)
        await self._set(text.id, turn_due_at=self.clock.now() + wait)
        log.warning("sms.turn_retry", message_id=text.id, attempt=text.attempt,
                    retry_in=wait.total_seconds(), reason=reason)  # fmt: skip

    async def _set(self, message_id: int, **values: object) -> None:
        try:
            async with self.sessions.begin() as session:
                await session.execute(
                    update(Message)
                    .where(Message.id == message_id, Message.turn == PENDING)
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
        except Exception as error:  # the lease runs out and the text is tried again
            log.warning("sms.turn_not_recorded", message_id=message_id,
                        error=f"{type(error).__name__}: {error}")  # fmt: skip


@dataclass
class BotTurns:
    """The bot's turn for a text, run by Rasa's SMS channel (`POST /webhooks/sms/turn`),
    which skips a text already in the conversation: asking again is safe."""

    rasa: RasaClient
    timeout: float
    # Gives a text from a number that was new when it arrived its sender's profile, so
    # that the bot's actions and the person's history find one (backend.messaging.inbound).
    attach_profile: Callable[[PendingText], Awaitable[None]]

    async def answer(self, text: PendingText) -> None:
        await self.attach_profile(text)
        try:
            await self.rasa.answer_text(
                {"message_id": text.id, "sid": text.sid, "from": text.sender, "to": text.to,
                 "body": text.body, "media_urls": text.media_urls},
                self.timeout,
            )  # fmt: skip
        except RasaUnavailable as error:
            # 400: the channel cannot read this text, and never will.
            raise AnswerFailed(f"the bot: {error}", final=error.status == 400) from error


def _pending(row: Message) -> PendingText:
    return PendingText(
        id=row.id,
        profile_id=row.profile_id,
        sid=row.provider_sid or "",
        sender=row.from_address,
        to=row.to_address,
        body=row.body,
        media_urls=list(row.media.get("urls", [])),
        keyword=row.keyword,
        attempt=row.turn_attempts,
    )
