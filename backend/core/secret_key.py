"""The installation's secret key (for keyed hashes of erased identities, and later for
signing web chat sessions).

From PARLEY_SECRET_KEY; on the embedded SQLite default it may instead be generated
once into <var_dir>/secret.key. A shared database (PostgreSQL) means several processes
that must agree on the key, so there it has to be set.
"""

from __future__ import annotations

import os
import secrets

from backend.core.settings import Settings


class SecretKeyMissing(RuntimeError):
    pass


def load_or_create(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    if not settings.resolved_database_url.startswith("sqlite"):
        raise SecretKeyMissing(
            "PARLEY_SECRET_KEY must be set when the database is shared (not SQLite): "
            "every process must use the same key. Make one with: "
            "python3 -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return machine_key(settings).encode()


def machine_key(settings: Settings) -> str:
    """The key kept in <var_dir>/secret.key, made there the first time: shared by every
    process on this machine (the embedded default, and the scale profile run natively)."""
    path = settings.var_path / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(32))
    return path.read_text().strip()
