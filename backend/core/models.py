"""The backend's tables, as SQLAlchemy 2 declarative models.

Schema changes go through Alembic (`backend/migrations`); `parley db upgrade` applies them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Stable constraint names, so migrations read the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = value.astimezone(UTC)
        # SQLite compares datetimes as text: store them all as naive UTC, one format.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# JSON documents: JSONB on PostgreSQL (indexed, parsed once), JSON text on SQLite.
Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar = {datetime: UTCDateTime, dict[str, Any]: Document}


# An autoincrementing 64-bit key on PostgreSQL; SQLite autoincrements only INTEGER keys.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _prefix_index(name: str, expression: str, where: str | None = None) -> Index:
    """A PostgreSQL index for case-insensitive prefix search (migration 0014;
    backend/people/search.py). SQLite has none: it scans."""
    return Index(name, text(expression), postgresql_where=text(where) if where else None).ddl_if(
        dialect="postgresql"
    )


class Profile(Base):
    """One person Parley knows, however many channels they use."""

    __tablename__ = "profiles"
    __table_args__ = (
        _prefix_index("ix_profiles_first_name_prefix", "lower(first_name) text_pattern_ops"),
        _prefix_index("ix_profiles_last_name_prefix", "lower(last_name) text_pattern_ops"),
        _prefix_index("ix_profiles_company_prefix", "lower(company) text_pattern_ops"),
        _prefix_index("ix_profiles_email_prefix", "lower(email) text_pattern_ops"),
        Index("ix_profiles_phone", "phone"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(20))
    locale: Mapped[str | None] = mapped_column(String(35))
    timezone: Mapped[str | None] = mapped_column(String(64))
    company: Mapped[str | None] = mapped_column(String(200))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Lead score, in two parts (see backend.scoring.rules): event points, stored scaled to the
    # scoring epoch so that decay needs no per-row arithmetic, and attribute points.
    score_events: Mapped[float] = mapped_column(Float, default=0.0)
    score_attributes: Mapped[float] = mapped_column(Float, default=0.0)
    # Set when this profile was merged into another; it then holds nothing else.
    merged_into_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    identities: Mapped[list[Identity]] = relationship(
        back_populates="profile",
        cascade="all, delete-orphan",
        order_by="Identity.created_at",
        lazy="selectin",
    )


class Identity(Base):
    """An address by which a profile reaches us: a phone number, a chat session, ..."""

    __tablename__ = "identities"
    __table_args__ = (
        Index("uq_identities_kind_address", "kind", "address", unique=True),
        _prefix_index(
            "ix_identities_email_prefix", "lower(address) text_pattern_ops", "kind = 'email'"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]

    profile: Mapped[Profile] = relationship(back_populates="identities")


class Event(Base):
    """Something a person did: viewed a page, started a trial, expressed an intent."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_profile_type_time", "profile_id", "type", "occurred_at"),
        Index("ix_events_type_time", "type", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(64))
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime]
    # A repeated key is the same event sent twice: it is stored once.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class ConsentEvent(Base):
    """One line of the consent ledger. Appended, never changed; removed only by erasure."""

    __tablename__ = "consent_events"
    __table_args__ = (
        Index("ix_consent_events_profile_time", "profile_id", "occurred_at"),
        Index("ix_consent_events_time", "occurred_at"),  # the overview's opt-ins per day
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("profiles.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(8))  # sms, voice, email, web or all
    purpose: Mapped[str] = mapped_column(String(16))  # marketing or transactional
    action: Mapped[str] = mapped_column(String(8))  # grant or withdraw
    # A grant waiting for confirmation (double opt-in); it changes nothing until then.
    pending: Mapped[bool] = mapped_column(default=False)
    # For a confirming grant: the pending grant it confirms.
    confirms_seq: Mapped[int | None] = mapped_column(BigId)
    source: Mapped[str] = mapped_column(String(16))
    wording: Mapped[str | None] = mapped_column(Text)  # what the person was shown or told
    reply: Mapped[str | None] = mapped_column(Text)  # what the person said, in their words
    channel_metadata: Mapped[dict[str, Any]] = mapped_column(default=dict)
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    recorded_by: Mapped[str | None] = mapped_column(String(100))


class ConsentState(Base):
    """The ledger folded into the current state per channel and purpose (a projection,
    rewritten from the ledger whenever a profile's ledger grows)."""

    __tablename__ = "consent_states"

    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    channel: Mapped[str] = mapped_column(String(8), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)
    state: Mapped[str] = mapped_column(String(10))  # granted, withdrawn, pending
    since: Mapped[datetime]


class ScoreContribution(Base):
    """How much one scoring rule adds to one profile's score (the score's explanation)."""

    __tablename__ = "score_contributions"

    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )
    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Event rules: points scaled to the scoring epoch; attribute rules: plain points.
    points: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(default=0)
    last_at: Mapped[datetime | None]


class ScoringState(Base):
    """Which scoring rules the stored scores were computed with (one row)."""

    __tablename__ = "scoring_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    rules_fingerprint: Mapped[str] = mapped_column(String(64))
    rebuilt_at: Mapped[datetime]


class Segment(Base):
    """A named rule tree over profiles; from data/segments/*.yml or the API."""

    __tablename__ = "segments"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    rule: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(8))  # file or api
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Merge(Base):
    """The record that one profile turned out to be the same person as another."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    survivor_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    merged_id: Mapped[uuid.UUID] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text)
    merged_at: Mapped[datetime]
    merged_by: Mapped[str | None] = mapped_column(String(100))


class Tombstone(Base):
    """What remains of an erased profile: keyed hashes of its identities, so that a later
    import of the same person cannot silently bring back a withdrawn consent."""

    __tablename__ = "tombstones"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    identity_hash: Mapped[str] = mapped_column(String(64), index=True)
    erased_at: Mapped[datetime]


class AuditEntry(Base):
    """Who changed what, through which route. Written in the same transaction as the change."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))  # the token's name
    role: Mapped[str] = mapped_column(String(16))
    token_id: Mapped[uuid.UUID | None]
    action: Mapped[str] = mapped_column(String(64))  # the route name
    target: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Demo(Base):
    """A demo call booked in conversation. One live booking per start time."""

    __tablename__ = "demos"
    __table_args__ = (
        Index(
            "uq_demos_booked_start",
            "starts_at",
            unique=True,
            postgresql_where=text("status = 'booked'"),
            sqlite_where=text("status = 'booked'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    starts_at: Mapped[datetime]
    minutes: Mapped[int]
    status: Mapped[str] = mapped_column(String(10))  # booked or cancelled
    conversation_id: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Handoff(Base):
    """A conversation handed to a person; the bot stays silent in it until it is closed."""

    __tablename__ = "handoffs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    conversation_id: Mapped[str] = mapped_column(String(200), index=True)
    channel: Mapped[str] = mapped_column(String(32))
    # requested, repeated_failure, or follow_up (a sequence's hand-off step)
    reason: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)  # the hand-off step's words for the agent
    status: Mapped[str] = mapped_column(String(8))  # open or closed
    opened_at: Mapped[datetime]
    # The agent answering it, so two people never answer one customer at once.
    claimed_by: Mapped[str | None] = mapped_column(String(320))  # their name, to show
    claimed_by_id: Mapped[uuid.UUID | None]  # their API token or console user: who it is
    claimed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(String(100))


class ConsoleUser(Base):
    """A person who signs in to the console. Only an argon2 hash of the password is kept."""

    __tablename__ = "console_users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower case
    role: Mapped[str] = mapped_column(String(16))  # admin, marketer, agent or analyst
    password_hash: Mapped[str] = mapped_column(String(200))
    # Failed sign-ins in a row; at the limit the account is locked until `locked_until`.
    failed_sign_ins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]

    @property
    def name(self) -> str:  # the audit log's actor
        return self.email


class ApiToken(Base):
    """A bearer token for the API. Only its SHA-256 is kept; the token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters, so an operator can tell tokens apart without the secret.
    prefix: Mapped[str] = mapped_column(String(16))
    ephemeral: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Message(Base):
    """One SMS in or out, one call Parley placed, one web push or one e-mail. Every
    outbound text leaves through the backend's one door (backend.messaging.sms_door),
    every call through the call door (call_door), every web push through the web door
    (web_door), every e-mail through the e-mail door (email_door), and each is recorded
    here with its status; inbound texts are recorded once per Twilio MessageSid."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_profile_time", "profile_id", "created_at"),
        # The texts still to be answered, by sender (backend.messaging.text_turns claims from it).
        Index(
            "ix_messages_pending_turns",
            "from_address",
            "id",
            postgresql_where=text("turn = 'pending'"),
            sqlite_where=text("turn = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE")
    )
    direction: Mapped[str] = mapped_column(String(8))  # inbound or outbound
    # sms, voice (body: what was said), web or email
    channel: Mapped[str] = mapped_column(String(8))
    # Outbound: marketing, transactional, conversational or compliance.
    purpose: Mapped[str | None] = mapped_column(String(16))
    # A phone number, an e-mail address, or for a web message the web chat
    # conversation (a session id).
    to_address: Mapped[str] = mapped_column(String(320))
    from_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str | None] = mapped_column(String(998))  # an e-mail's
    body: Mapped[str] = mapped_column(Text)  # an e-mail's text part
    media: Mapped[dict[str, Any]] = mapped_column(default=dict)  # {"urls": [...]}
    # queued, sent, delivered, undelivered, failed (outbound) or received (inbound); a
    # call's statuses are mapped to these words (backend.messaging.call_door.CALL_STATUS).
    status: Mapped[str] = mapped_column(String(12))
    error_code: Mapped[int | None] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Twilio's MessageSid (a call's CallSid): a retried webhook or callback finds its
    # message by it.
    provider_sid: Mapped[str | None] = mapped_column(String(64), unique=True)
    keyword: Mapped[str | None] = mapped_column(String(8))  # inbound STOP, START or HELP
    in_reply_to_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL")
    )
    # The parts of one long text share a batch; a repeated send key is the same send.
    batch_id: Mapped[uuid.UUID] = mapped_column(index=True)
    part: Mapped[int] = mapped_column(Integer, default=1)
    parts: Mapped[int] = mapped_column(Integer, default=1)
    send_key: Mapped[str | None] = mapped_column(String(220), unique=True)
    # A follow-up's text: the enrolment, step and variant it was sent for (results).
    enrolment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("enrolments.id", ondelete="SET NULL"), index=True
    )
    sequence_step: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64))
    # An inbound text's answer (the bot's turn, or a keyword's confirmation): pending
    # until given, then done, or failed after every attempt (backend.messaging.text_turns). The
    # next attempt may start at turn_due_at; a claimed one's lease ends then.
    turn: Mapped[str | None] = mapped_column(String(8))
    turn_due_at: Mapped[datetime | None]
    turn_attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class HeldMessage(Base):
    """A marketing message a door could not deliver yet (quiet hours or the frequency
    cap, backend.messaging.guards), kept until `not_before` and then delivered through
    the same door, its guards and consent checked again (backend.messaging.held)."""

    __tablename__ = "held_messages"
    __table_args__ = (
        Index(
            "ix_held_messages_due",
            "not_before",
            postgresql_where=text("status = 'held'"),
            sqlite_where=text("status = 'held'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(8))  # sms, voice, web or email
    to_address: Mapped[str] = mapped_column(String(320))
    purpose: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    # {"urls": [...]}; an e-mail's {"email": {"subject": ..., "html": ...}}
    media: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The caller's send key: the same key sent again is this held message.
    send_key: Mapped[str | None] = mapped_column(String(220), unique=True)
    reason: Mapped[str] = mapped_column(String(16))  # quiet-hours or frequency-cap
    not_before: Mapped[datetime]
    # held, sent (message_id: its first part), refused (consent withdrawn meanwhile),
    # cancelled (through the API)
    status: Mapped[str] = mapped_column(String(10))
    detail: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("messages.id", ondelete="SET NULL")
    )
    lease_until: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class EmailSuppression(Base):
    """An address no e-mail goes to any more: it bounced for good (no such mailbox), so
    sending again would only hurt the sender's reputation. Kept with its evidence
    (backend.messaging.email_feedback); erased with the person's identities."""

    __tablename__ = "email_suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # hard-bounce
    source: Mapped[str] = mapped_column(String(32))  # smtp, mailgun, api
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)  # what the provider said
    suppressed_at: Mapped[datetime]


class RetentionRun(Base):
    """One run of the retention job (backend.people.retention): what it deleted, in the
    backend and in Rasa's tracker store. `slot` makes a day's scheduled run happen
    once, whichever worker gets there first."""

    __tablename__ = "retention_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    slot: Mapped[str] = mapped_column(String(64), unique=True)
    started_at: Mapped[datetime] = mapped_column(index=True)
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(10))  # running, done or failed
    # Rows deleted, by what: conversation_events (Rasa's tracker store), rasa_events,
    # conversation_rollups, messages, held_messages, events.
    deleted: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_by: Mapped[str] = mapped_column(String(100))


class RasaEvent(Base):
    """One event of a Rasa conversation, exactly as Rasa published it to RabbitMQ (the
    scale profile; backend.rasa_events consumes the queue): the backend's copy of every
    transcript, each event held once however often it is delivered (`idempotency_key`,
    made from its content by message_rules.rasa_events.event_key). `id` is the order of
    arrival, which is the conversation's own order; a conversation read by `timestamp`
    (Rasa's, seconds since the epoch), then `id`, is Rasa's order in time."""

    __tablename__ = "rasa_events"
    __table_args__ = (
        Index("ix_rasa_events_sender_time", "sender_id", "timestamp", "id"),
        Index("ix_rasa_events_sender_type", "sender_id", "type", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sender_id: Mapped[str] = mapped_column(String(320))  # the conversation
    type: Mapped[str] = mapped_column(String(64))  # Rasa's `event`: user, action, slot, …
    timestamp: Mapped[float] = mapped_column(Float, index=True)
    received_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]  # the event as published
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)


class ConversationRollup(Base):
    """A conversation as the messages people sent in it add up (kept by
    backend.conversations.rollups as each `intent_expressed` event is recorded), so the
    conversations list reads one row per conversation instead of grouping every
    message. Erased with its person, deleted by retention with the conversations."""

    __tablename__ = "conversation_rollups"
    # Latest first, as the list reads them: an index scan that stops at a page.
    __table_args__ = (Index("ix_conversation_rollups_last", "last_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    conversation: Mapped[str] = mapped_column(String(320), unique=True)  # Rasa's sender id
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))  # of its first recorded message
    started_at: Mapped[datetime]
    last_at: Mapped[datetime]
    messages: Mapped[int]
    fallbacks: Mapped[int]  # messages the NLU did not understand (nlu_fallback)


class ConversationIntentRollup(Base):
    """How often each intent was expressed in a conversation, and when first."""

    __tablename__ = "conversation_intent_rollups"
    __table_args__ = (Index("ix_conversation_intent_rollups_intent", "intent", "conversation_id"),)

    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversation_rollups.id", ondelete="CASCADE"), primary_key=True
    )
    intent: Mapped[str] = mapped_column(String(200), primary_key=True)
    first_at: Mapped[datetime]
    messages: Mapped[int]


class ConversationDayRollup(Base):
    """A day (UTC) on which a conversation had a message: a conversation is counted once
    a day however many messages it has."""

    __tablename__ = "conversation_day_rollups"
    __table_args__ = (Index("ix_conversation_day_rollups_day", "day", "conversation_id"),)

    conversation_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("conversation_rollups.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)


class DailyChannelRollup(Base):
    """Conversations with a message on a day (UTC), per channel. Counts only: nothing
    here names a person, so retention and erasure leave it."""

    __tablename__ = "daily_channel_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    conversations: Mapped[int]


class DailyIntentRollup(Base):
    """Messages on a day (UTC) per channel and intent ('' when a message had none)."""

    __tablename__ = "daily_intent_rollups"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    intent: Mapped[str] = mapped_column(String(200), primary_key=True)
    messages: Mapped[int]


class SenderPace(Base):
    """When each sending number may send next: one row per number, shared by every
    backend replica, so that together they keep to the number's rate."""

    __tablename__ = "sender_pace"

    # A number, or `email:<domain>` for the e-mails to one receiving domain.
    sender: Mapped[str] = mapped_column(String(260), primary_key=True)
    next_free_at: Mapped[datetime]


class Enrolment(Base):
    """One person in one follow-up sequence (sequences.enrolment, sequences.scheduler)."""

    __tablename__ = "enrolments"
    __table_args__ = (
        Index("ix_enrolments_sequence_profile", "sequence", "profile_id"),
        # Nobody is in the same sequence twice at once.
        Index(
            "uq_enrolments_active",
            "sequence",
            "profile_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    sequence: Mapped[str] = mapped_column(String(64))
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(10))  # active, exited or completed
    exit_reason: Mapped[str | None] = mapped_column(String(64))
    current_step: Mapped[str | None] = mapped_column(String(64))
    # The event that enrolled them, as templates see it: {type, properties}.
    trigger_type: Mapped[str] = mapped_column(String(64))
    trigger_properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Per send step id: the variant name, or null for the holdout (chosen once).
    variants: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enrolled_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SequenceHold(Base):
    """A sequence put on hold from the console or the API: its steps wait (nothing is
    sent) until it is resumed; people still enter it."""

    __tablename__ = "sequence_holds"

    sequence: Mapped[str] = mapped_column(String(64), primary_key=True)
    held_at: Mapped[datetime]
    held_by: Mapped[str] = mapped_column(String(320))


class SequenceWork(Base):
    """A step of an enrolment due at a time; workers claim it with a lease."""

    __tablename__ = "sequence_work"
    __table_args__ = (
        Index("ix_sequence_work_done_due", "done_at", "due_at"),
        Index("uq_sequence_work_attempt", "enrolment_id", "step", "attempt", unique=True),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    enrolment_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("enrolments.id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime]
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_until: Mapped[datetime | None]
    done_at: Mapped[datetime | None]
    # sent, held_out, waited, updated, skipped_consent, retry, failed, rescheduled, ...
    outcome: Mapped[str | None] = mapped_column(String(32))
    outcome_detail: Mapped[str | None] = mapped_column(Text)
    # The door's send key for this step's text, stored with the outcome (until then it is
    # derived from the row). A retry after an unknown outcome starts with the earlier
    # row's, so the door looks that send up at Twilio instead of texting twice.
    send_key: Mapped[str | None] = mapped_column(String(220))
    # The step's text is in the person's conversation already: an earlier attempt
    # recorded it and was not sent (the sending number was busy), so this one sends it
    # without recording it a second time.
    recorded: Mapped[bool] = mapped_column(default=False, server_default=false())


class SegmentWatch(Base):
    """A segment that some sequence's `segment_entered` trigger watches
    (backend.sequences.segment_entries): its members were last compared at `swept_at`, under a rule
    (and scoring rules) with this fingerprint."""

    __tablename__ = "segment_watches"

    segment: Mapped[str] = mapped_column(String(64), primary_key=True)
    rules_fingerprint: Mapped[str] = mapped_column(String(64))
    watched_since: Mapped[datetime]
    swept_at: Mapped[datetime]


class SegmentMember(Base):
    """Who was in a watched segment at its last sweep; someone in it now but not here has
    entered it."""

    __tablename__ = "segment_members"

    segment: Mapped[str] = mapped_column(
        ForeignKey("segment_watches.segment", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    # When the sweep saw them enter (for members already there when the watch began: then).
    entered_at: Mapped[datetime]
