"""rasa_events: every Rasa conversation event consumed from RabbitMQ, held once

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.core.models

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'rasa_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('sender_id', sa.String(length=320), nullable=False),
        sa.Column('type', sa.String(length=64), nullable=False),
        sa.Column('timestamp', sa.Float(), nullable=False),
        sa.Column('received_at', backend.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            'data',
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False,
        ),
        sa.Column('idempotency_key', sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_rasa_events')),
        sa.UniqueConstraint('idempotency_key', name=op.f('uq_rasa_events_idempotency_key')),
    )  # fmt: skip
    op.create_index(
        'ix_rasa_events_sender_time', 'rasa_events', ['sender_id', 'timestamp', 'id'], unique=False
    )
    op.create_index(
        'ix_rasa_events_sender_type', 'rasa_events', ['sender_id', 'type', 'id'], unique=False
    )
    op.create_index(op.f('ix_rasa_events_timestamp'), 'rasa_events', ['timestamp'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_rasa_events_timestamp'), table_name='rasa_events')
    op.drop_index('ix_rasa_events_sender_type', table_name='rasa_events')
    op.drop_index('ix_rasa_events_sender_time', table_name='rasa_events')
    op.drop_table('rasa_events')
