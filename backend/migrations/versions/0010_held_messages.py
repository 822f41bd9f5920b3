"""held_messages: marketing messages the doors' guards hold until they may go; a
message's to_address holds a web chat conversation too (320 characters)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.core.models

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
WHEN = backend.core.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch_op:
        batch_op.alter_column(
            'to_address', existing_type=sa.String(length=32), type_=sa.String(length=320),
            existing_nullable=False,
        )  # fmt: skip
    op.create_table(
        'held_messages',
        sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
        sa.Column('profile_id', sa.Uuid(), nullable=False),
        sa.Column('channel', sa.String(length=8), nullable=False),
        sa.Column('to_address', sa.String(length=320), nullable=False),
        sa.Column('purpose', sa.String(length=16), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column(
            'media',
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False,
        ),
        sa.Column('send_key', sa.String(length=220), nullable=True),
        sa.Column('reason', sa.String(length=16), nullable=False),
        sa.Column('not_before', WHEN, nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('detail', sa.Text(), nullable=True),
        sa.Column('message_id', BIG_ID, nullable=True),
        sa.Column('lease_until', WHEN, nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=True),
        sa.Column('created_at', WHEN, nullable=False),
        sa.Column('updated_at', WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ['message_id'], ['messages.id'],
            name=op.f('fk_held_messages_message_id_messages'), ondelete='SET NULL',
        ),
        sa.ForeignKeyConstraint(
            ['profile_id'], ['profiles.id'],
            name=op.f('fk_held_messages_profile_id_profiles'), ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_held_messages')),
        sa.UniqueConstraint('send_key', name=op.f('uq_held_messages_send_key')),
    )  # fmt: skip
    op.create_index(
        op.f('ix_held_messages_profile_id'), 'held_messages', ['profile_id'], unique=False
    )
    op.create_index(
        'ix_held_messages_due', 'held_messages', ['not_before'], unique=False,
        postgresql_where=sa.text("status = 'held'"), sqlite_where=sa.text("status = 'held'"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index('ix_held_messages_due', table_name='held_messages')
    op.drop_index(op.f('ix_held_messages_profile_id'), table_name='held_messages')
    op.drop_table('held_messages')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.alter_column(
            'to_address', existing_type=sa.String(length=320), type_=sa.String(length=32),
            existing_nullable=False,
        )  # fmt: skip
