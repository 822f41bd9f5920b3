"""Finding people by what a person at the console types: a name, an e-mail address, or a
phone number written any way.

- Something with an `@` is the start of an e-mail address (the profile's, or one of its
  e-mail identities).
- Something a phone number can be read from (in the business's default region, as
  people write them locally) is that number, exactly: the profile's phone, or an SMS or
  voice identity.
- Anything else is words, each the start of the first name, the last name, the company
  or the e-mail address: "ada love" finds Ada Lovelace.

Case does not matter. Matching is by prefix, which PostgreSQL answers from the
`lower(...) text_pattern_ops` indexes of migration 0014, so a search stays fast at a
million profiles. Merged-away profiles are left out (their survivor is found instead).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, union
from sqlalchemy.ext.asyncio import AsyncSession

from backend.core.identities import PHONE_KINDS, IdentityKind, InvalidAddress, normalise_phone
from backend.core.models import Identity, Profile

_PHONE = re.compile(r"[+(\d][\d\s().-]{5,}")


def _escaped(text: str) -> str:
    """`text` as a LIKE prefix, with LIKE's own characters taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _starts(column: Any, text: str) -> ColumnElement[bool]:
    return func.lower(column).like(_escaped(text.lower()), escape="\\")


def matches(query: str, default_region: str) -> ColumnElement[bool]:
    """Where a profile matches `query` (see the module's docstring). The e-mail and phone
    cases are a union of the profile's column and its identities, so that each side is
    answered from its own index."""
    text = query.strip()
    if "@" in text:
        return Profile.id.in_(
            union(
                select(Profile.id).where(_starts(Profile.email, text)),
                select(Identity.profile_id).where(
                    Identity.kind == IdentityKind.EMAIL.value, _starts(Identity.address, text)
                ),
            )
        )
    if _PHONE.fullmatch(text):
        try:
            number = normalise_phone(text, default_region)
        except InvalidAddress:
            pass
        else:
            return Profile.id.in_(
                union(
                    select(Profile.id).where(Profile.phone == number),
                    select(Identity.profile_id).where(
                        Identity.kind.in_([k.value for k in PHONE_KINDS]),
                        Identity.address == number,
                    ),
                )
            )
    columns = (Profile.first_name, Profile.last_name, Profile.company, Profile.email)
    return and_(*(or_(*(_starts(c, word) for c in columns)) for word in text.split()))


async def search(
    session: AsyncSession, query: str, default_region: str, limit: int, after: uuid.UUID | None
) -> list[Profile]:
    """Live profiles matching `query`, ordered by id, from after `after`."""
    found = select(Profile).where(Profile.merged_into_id.is_(None), matches(query, default_region))
    if after is not None:
        found = found.where(Profile.id > after)
    return list(await session.scalars(found.order_by(Profile.id).limit(limit)))
