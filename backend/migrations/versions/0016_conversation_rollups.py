"""conversation roll-ups: what the messages people sent add up to, per conversation and
per day, built here from the events recorded so far and kept from now on as each
message is recorded (backend/conversations/rollups.py); an index for the overview's
opt-ins and opt-outs per day

The backfill is this revision's own SQL, not the module's code, so that it keeps
building these tables as they are here whatever later revisions change.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 05:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.core.models

revision: str = '0016'
down_revision: str | None = '0015'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = backend.core.models.UTCDateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

# Every message a person sent that names its conversation (as the module reads it).
SAID = {
    'postgresql': """
        CREATE TEMPORARY TABLE rollup_said AS
        SELECT id, profile_id, occurred_at,
               CAST(timezone('UTC', occurred_at) AS DATE) AS day,
               properties ->> 'conversation' AS conversation,
               CASE WHEN jsonb_typeof(properties -> 'channel') = 'string'
                         AND length(properties ->> 'channel') BETWEEN 1 AND 32
                    THEN properties ->> 'channel' ELSE 'rest' END AS channel,
               CASE WHEN jsonb_typeof(properties -> 'intent') = 'string'
                         AND length(properties ->> 'intent') BETWEEN 1 AND 200
                    THEN properties ->> 'intent' END AS intent
        FROM events
        WHERE type = 'intent_expressed'
          AND jsonb_typeof(properties -> 'conversation') = 'string'
          AND length(properties ->> 'conversation') BETWEEN 1 AND 320
    """,
    'sqlite': """
        CREATE TEMPORARY TABLE rollup_said AS
        SELECT id, profile_id, occurred_at,
               date(occurred_at) AS day,
               json_extract(properties, '$.conversation') AS conversation,
               CASE WHEN json_type(properties, '$.channel') = 'text'
                         AND length(json_extract(properties, '$.channel')) BETWEEN 1 AND 32
                    THEN json_extract(properties, '$.channel') ELSE 'rest' END AS channel,
               CASE WHEN json_type(properties, '$.intent') = 'text'
                         AND length(json_extract(properties, '$.intent')) BETWEEN 1 AND 200
                    THEN json_extract(properties, '$.intent') END AS intent
        FROM events
        WHERE type = 'intent_expressed'
          AND json_type(properties, '$.conversation') = 'text'
          AND length(json_extract(properties, '$.conversation')) BETWEEN 1 AND 320
    """,
}

BACKFILL = [
    'CREATE INDEX ix_rollup_said_conversation ON rollup_said (conversation)',
    # A conversation's person and channel are its first message's.
    """
    INSERT INTO conversation_rollups
        (conversation, profile_id, channel, started_at, last_at, messages, fallbacks)
    SELECT s.conversation, f.profile_id, f.channel, min(s.occurred_at), max(s.occurred_at),
           count(*), sum(CASE WHEN s.intent = 'nlu_fallback' THEN 1 ELSE 0 END)
    FROM rollup_said s
    JOIN (SELECT conversation, profile_id, channel FROM (
            SELECT conversation, profile_id, channel,
                   row_number() OVER (PARTITION BY conversation ORDER BY occurred_at, id) AS n
            FROM rollup_said) ranked
          WHERE n = 1) f ON f.conversation = s.conversation
    GROUP BY s.conversation, f.profile_id, f.channel
    """,
    """
    INSERT INTO conversation_intent_rollups (conversation_id, intent, first_at, messages)
    SELECT c.id, s.intent, min(s.occurred_at), count(*)
    FROM rollup_said s JOIN conversation_rollups c ON c.conversation = s.conversation
    WHERE s.intent IS NOT NULL
    GROUP BY c.id, s.intent
    """,
    """
    INSERT INTO conversation_day_rollups (conversation_id, day)
    SELECT DISTINCT c.id, s.day
    FROM rollup_said s JOIN conversation_rollups c ON c.conversation = s.conversation
    """,
    """
    INSERT INTO daily_channel_rollups (day, channel, conversations)
    SELECT d.day, c.channel, count(*)
    FROM conversation_day_rollups d JOIN conversation_rollups c ON c.id = d.conversation_id
    GROUP BY d.day, c.channel
    """,
    """
    INSERT INTO daily_intent_rollups (day, channel, intent, messages)
    SELECT s.day, c.channel, COALESCE(s.intent, ''), count(*)
    FROM rollup_said s JOIN conversation_rollups c ON c.conversation = s.conversation
    GROUP BY s.day, c.channel, COALESCE(s.intent, '')
    """,
    'DROP TABLE rollup_said',
]


def upgrade() -> None:
    op.create_table(
        'conversation_rollups',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('conversation', sa.String(length=320), nullable=False),
        sa.Column('profile_id', sa.Uuid(), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('started_at', UTC_TIME, nullable=False),
        sa.Column('last_at', UTC_TIME, nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.Column('fallbacks', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['profile_id'], ['profiles.id'],
            name=op.f('fk_conversation_rollups_profile_id_profiles'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_conversation_rollups')),
        sa.UniqueConstraint('conversation', name=op.f('uq_conversation_rollups_conversation')),
    )  # fmt: skip
    op.create_index('ix_conversation_rollups_last', 'conversation_rollups', ['last_at', 'id'])
    op.create_index(
        op.f('ix_conversation_rollups_profile_id'), 'conversation_rollups', ['profile_id']
    )
    op.create_table(
        'conversation_intent_rollups',
        sa.Column('conversation_id', BIG_ID, nullable=False),
        sa.Column('intent', sa.String(length=200), nullable=False),
        sa.Column('first_at', UTC_TIME, nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ['conversation_id'], ['conversation_rollups.id'],
            name=op.f('fk_conversation_intent_rollups_conversation_id_conversation_rollups'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint(
            'conversation_id', 'intent', name=op.f('pk_conversation_intent_rollups')
        ),
    )  # fmt: skip
    op.create_index(
        'ix_conversation_intent_rollups_intent', 'conversation_intent_rollups',
        ['intent', 'conversation_id'],
    )  # fmt: skip
    op.create_table(
        'conversation_day_rollups',
        sa.Column('conversation_id', BIG_ID, nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ['conversation_id'], ['conversation_rollups.id'],
            name=op.f('fk_conversation_day_rollups_conversation_id_conversation_rollups'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('conversation_id', 'day', name=op.f('pk_conversation_day_rollups')),
    )  # fmt: skip
    op.create_index(
        'ix_conversation_day_rollups_day', 'conversation_day_rollups', ['day', 'conversation_id']
    )
    op.create_table(
        'daily_channel_rollups',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('conversations', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'channel', name=op.f('pk_daily_channel_rollups')),
    )
    op.create_table(
        'daily_intent_rollups',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('intent', sa.String(length=200), nullable=False),
        sa.Column('messages', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'channel', 'intent', name=op.f('pk_daily_intent_rollups')),
    )
    op.create_index('ix_consent_events_time', 'consent_events', ['occurred_at'])

    dialect = op.get_context().dialect.name
    if dialect in SAID:  # the two databases Parley runs on
        op.execute(SAID[dialect])
        for statement in BACKFILL:
            op.execute(statement)


def downgrade() -> None:
    op.drop_index('ix_consent_events_time', table_name='consent_events')
    op.drop_table('daily_intent_rollups')
    op.drop_table('daily_channel_rollups')
    op.drop_table('conversation_day_rollups')
    op.drop_table('conversation_intent_rollups')
    op.drop_table('conversation_rollups')
