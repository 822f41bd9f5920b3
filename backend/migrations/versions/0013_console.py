"""console: the people who sign in to the console, and who has claimed a hand-off

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.core.models

revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'console_users',
        sa.Column('id', sa.Uuid(), nullable=False),
        sa.Column('email', sa.String(length=320), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('password_hash', sa.String(length=200), nullable=False),
        sa.Column('failed_sign_ins', sa.Integer(), nullable=False),
        sa.Column('locked_until', backend.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column('created_at', backend.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('disabled_at', backend.core.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_console_users')),
        sa.UniqueConstraint('email', name=op.f('uq_console_users_email')),
    )
    with op.batch_alter_table('handoffs') as batch:
        batch.add_column(sa.Column('claimed_by', sa.String(length=320), nullable=True))
        batch.add_column(sa.Column('claimed_by_id', sa.Uuid(), nullable=True))
        batch.add_column(
            sa.Column(
                'claimed_at', backend.core.models.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table('handoffs') as batch:
        batch.drop_column('claimed_at')
        batch.drop_column('claimed_by_id')
        batch.drop_column('claimed_by')
    op.drop_table('console_users')
