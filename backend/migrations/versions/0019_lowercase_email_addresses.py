"""e-mail addresses in lower case: Ada@Example.com and ada@example.com are one mailbox

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 10:00:00.000000

Addresses are now stored in lower case (backend.core.identities.normalise_email): every
mail provider people use treats the part before the @ without regard to case, so the
address someone types in a form and the one their mail app replies from must find the
same person. Existing e-mail identities and suppressions are lowered here. Where a
lower-case twin exists already (the same mailbox recorded twice, under two profiles),
the identity is left as it was: the two people are for a person to merge (the console's
or the API's merge), not for a migration to guess; its lower-case twin is the one found
from now on. A suppressed twin is dropped (the lower-case row suppresses the mailbox).
The profiles' `email` field is lowered too. Downgrading keeps the lower case.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0019'
down_revision: str | None = '0018'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

identities = sa.table(
    'identities',
    sa.column('id', sa.Uuid()),
    sa.column('kind', sa.String()),
    sa.column('address', sa.String()),
    sa.column('created_at', sa.DateTime()),
)
suppressions = sa.table('email_suppressions', sa.column('address', sa.String()))
profiles = sa.table('profiles', sa.column('email', sa.String()))


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(identities.c.id, identities.c.address)
        .where(identities.c.kind == 'email')
        .order_by(identities.c.created_at, identities.c.id)
    ).all()
    taken = {address for _, address in rows if address == address.lower()}
    for identity_id, address in rows:
        lowered = address.lower()
        if address == lowered or lowered in taken:
            continue
        connection.execute(
            sa.update(identities).where(identities.c.id == identity_id).values(address=lowered)
        )
        taken.add(lowered)
    suppressed = {a for (a,) in connection.execute(sa.select(suppressions.c.address))}
    for address in sorted(suppressed):
        lowered = address.lower()
        if address == lowered:
            continue
        if lowered in suppressed:
            connection.execute(sa.delete(suppressions).where(suppressions.c.address == address))
        else:
            connection.execute(
                sa.update(suppressions)
                .where(suppressions.c.address == address)
                .values(address=lowered)
            )
            suppressed.add(lowered)
    connection.execute(
        sa.update(profiles)
        .where(profiles.c.email.is_not(None), profiles.c.email != sa.func.lower(profiles.c.email))
        .values(email=sa.func.lower(profiles.c.email))
    )


def downgrade() -> None:
    pass  # the original case is not kept: lower case serves either way
