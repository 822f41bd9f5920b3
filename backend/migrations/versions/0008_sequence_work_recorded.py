"""sequence_work.recorded: a retried step whose text is in the conversation already

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 11:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        'sequence_work',
        sa.Column('recorded', sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table('sequence_work') as batch_op:
        batch_op.drop_column('recorded')
