"""email_suppressions: addresses that bounced for good, sent nothing more

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 06:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import backend.core.models

revision: str = '0018'
down_revision: str | None = '0017'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'email_suppressions',
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('reason', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=32), nullable=False),
        sa.Column(
            'detail',
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
            nullable=False,
        ),
        sa.Column(
            'suppressed_at', backend.core.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint('address', name=op.f('pk_email_suppressions')),
    )


def downgrade() -> None:
    op.drop_table('email_suppressions')
