"""An e-mail address is one mailbox whatever its case: the address typed in a form and
the one a reply comes from find the same person, and migration 0019 lowers the addresses
recorded before (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from backend.core.database import create_engine
from backend.core.settings import Settings
from tests.backend.conftest import Api, migrate_again_from


async def test_the_case_of_an_address_does_not_make_another_person(service: Api) -> None:
    typed = await service.identify("email", "Ada.Lovelace@Example.COM")
    assert [i["address"] for i in typed["identities"]] == ["ada.lovelace@example.com"]
    replied = await service.identify("email", "ada.lovelace@example.com")
    assert replied["id"] == typed["id"]
    received = await service.post(
        "/api/v1/email/inbound",
        {"from": "ADA.LOVELACE@example.com", "subject": "Re: hello", "text": "Hi!"},
        expect=201,
    )
    assert received["profile_id"] == typed["id"]


async def _sql(settings: Settings, *statements: str) -> list[tuple[str, ...]]:
    engine = create_engine(settings.resolved_database_url)
    try:
        async with engine.begin() as connection:
            found: list[tuple[str, ...]] = []
            for statement in statements:
                result = await connection.execute(text(statement))
                if result.returns_rows:
                    found += [tuple(str(v) for v in row) for row in result]
            return found
    finally:
        await engine.dispose()


async def test_the_migration_lowers_what_was_recorded_and_leaves_twins_for_a_merge(
    service: Api, settings: Settings
) -> None:
    # What earlier versions recorded: the case as typed.
    ada = await service.identify("email", "ada@example.com", email="ada@example.com")
    bob = await service.identify("email", "bob@example.com")
    await _sql(
        settings,
        "UPDATE identities SET address = 'Ada@Example.com' WHERE address = 'ada@example.com'",
        "UPDATE profiles SET email = 'Ada@Example.com' WHERE email = 'ada@example.com'",
        "UPDATE identities SET address = 'Bob@example.com' WHERE address = 'bob@example.com'",
    )
    bob_twin = await service.identify("email", "bob@example.com")  # a second person then
    assert bob_twin["id"] != bob["id"]
    for address in ("zed@example.com", "yan@example.com"):
        await service.post(
            "/api/v1/email/events", {"events": [{"type": "bounce", "address": address}]}
        )
    await _sql(
        settings,
        "UPDATE email_suppressions SET address = 'Zed@example.com'"
        " WHERE address = 'zed@example.com'",
        "INSERT INTO email_suppressions (address, reason, source, detail, suppressed_at)"
        " SELECT 'Yan@example.com', reason, source, detail, suppressed_at"
        " FROM email_suppressions WHERE address = 'yan@example.com'",
    )

    await migrate_again_from(settings.resolved_database_url, "0018")

    identities = [
        (address, str(uuid.UUID(owner)))  # SQLite keeps a UUID as 32 hex digits
        for address, owner in await _sql(
            settings, "SELECT address, profile_id FROM identities WHERE kind = 'email' ORDER BY 1"
        )
    ]
    assert identities == [
        ("Bob@example.com", bob["id"]),  # its twin is found from now on
        ("ada@example.com", ada["id"]),
        ("bob@example.com", bob_twin["id"]),
    ]
    assert await _sql(settings, "SELECT address FROM email_suppressions ORDER BY 1") == [
        ("yan@example.com",), ("zed@example.com",),
    ]  # fmt: skip
    assert await _sql(
        settings,
        "SELECT p.email FROM profiles p JOIN identities i ON i.profile_id = p.id"
        " WHERE i.address = 'ada@example.com'",
    ) == [("ada@example.com",)]
    again = await service.identify("email", "ADA@example.com")
    assert again["id"] == ada["id"]
