"""sequence_holds: sequences put on hold at run time (their steps wait)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 04:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import backend.core.models

revision: str = '0015'
down_revision: str | None = '0014'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'sequence_holds',
        sa.Column('sequence', sa.String(length=64), nullable=False),
        sa.Column('held_at', backend.core.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column('held_by', sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint('sequence', name=op.f('pk_sequence_holds')),
    )


def downgrade() -> None:
    op.drop_table('sequence_holds')
