"""retention_runs: what each run of the retention job deleted

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.core.models

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WHEN = backend.core.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'retention_runs',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('slot', sa.String(length=64), nullable=False),
        sa.Column('started_at', WHEN, nullable=False),
        sa.Column('finished_at', WHEN, nullable=True),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column(
            'deleted',
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False,
        ),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('started_by', sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_runs')),
        sa.UniqueConstraint('slot', name=op.f('uq_retention_runs_slot')),
    )  # fmt: skip
    op.create_index(
        op.f('ix_retention_runs_started_at'), 'retention_runs', ['started_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f('ix_retention_runs_started_at'), table_name='retention_runs')
    op.drop_table('retention_runs')
