"""people search: prefix indexes for names, company, e-mail and phone

The console's and the API's people search (backend/people/search.py) matches by prefix,
case-insensitively. On PostgreSQL `lower(column) text_pattern_ops` indexes answer such a
LIKE from an index at a million profiles; SQLite, the embedded default for one machine,
scans.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = '0014'
down_revision: str | None = '0013'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX_INDEXES = {
    'ix_profiles_first_name_prefix': 'profiles (lower(first_name) text_pattern_ops)',
    'ix_profiles_last_name_prefix': 'profiles (lower(last_name) text_pattern_ops)',
    'ix_profiles_company_prefix': 'profiles (lower(company) text_pattern_ops)',
    'ix_profiles_email_prefix': 'profiles (lower(email) text_pattern_ops)',
    'ix_identities_email_prefix': (
        "identities (lower(address) text_pattern_ops) WHERE kind = 'email'"
    ),
}


def upgrade() -> None:
    op.create_index('ix_profiles_phone', 'profiles', ['phone'], unique=False)
    if op.get_context().dialect.name != 'postgresql':
        return
    for name, target in PREFIX_INDEXES.items():
        op.execute(f'CREATE INDEX {name} ON {target}')


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        for name in PREFIX_INDEXES:
            op.execute(f'DROP INDEX {name}')
    op.drop_index('ix_profiles_phone', table_name='profiles')
