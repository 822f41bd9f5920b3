"""messages.turn: every inbound text is answered once, after any crash

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.core.models

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch_op:
        batch_op.add_column(sa.Column('turn', sa.String(length=8), nullable=True))
        batch_op.add_column(
            sa.Column('turn_due_at', backend.core.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column('turn_attempts', sa.Integer(), server_default='0', nullable=False)
        )
    op.create_index(
        'ix_messages_pending_turns', 'messages', ['from_address', 'id'], unique=False,
        postgresql_where=sa.text("turn = 'pending'"), sqlite_where=sa.text("turn = 'pending'"),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_index('ix_messages_pending_turns', table_name='messages')
    with op.batch_alter_table('messages') as batch_op:
        batch_op.drop_column('turn_attempts')
        batch_op.drop_column('turn_due_at')
        batch_op.drop_column('turn')
