"""e-mail: a message's subject; addresses and paces long enough for e-mail

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 05:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0017'
down_revision: str | None = '0016'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('messages') as batch:
        batch.add_column(sa.Column('subject', sa.String(length=998), nullable=True))
        batch.alter_column(
            'from_address', existing_type=sa.String(length=32), type_=sa.String(length=320),
            existing_nullable=False,
        )  # fmt: skip
    with op.batch_alter_table('sender_pace') as batch:
        batch.alter_column(
            'sender', existing_type=sa.String(length=32), type_=sa.String(length=260),
            existing_nullable=False,
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table('sender_pace') as batch:
        batch.alter_column(
            'sender', existing_type=sa.String(length=260), type_=sa.String(length=32),
            existing_nullable=False,
        )  # fmt: skip
    with op.batch_alter_table('messages') as batch:
        batch.alter_column(
            'from_address', existing_type=sa.String(length=320), type_=sa.String(length=32),
            existing_nullable=False,
        )  # fmt: skip
        batch.drop_column('subject')
