"""The local admin API key of `conveyor up`: created on first start, printed once, kept in a 0600 file.

Keys are made by the API's key store (`conveyor.api.keys`), so they are hashed at rest like every
other key; the file next to the data directory is what local tools and the README's curl lines read.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING

from conveyor.embedded.state import write_private
from conveyor.redis.connection import connect

if TYPE_CHECKING:
    from conveyor.api.keys import KeyStore

ADMIN_KEY_NAME = "conveyor-up-admin"
ADMIN_SCOPES = ("enqueue", "read", "read-data", "admin")


def admin_key_path(data_dir: str) -> Path:
    """`<data dir>/../admin.key`: with the default data dir, `./.conveyor/admin.key`."""
    return Path(data_dir).expanduser().resolve().parent / "admin.key"


async def _ensure(url: str, prefix: str, path: Path) -> str | None:
    from conveyor.api.keys import KeyStore  # the API's key store: imported when keys are needed

    client = connect(url)
    try:
        store = KeyStore(client, prefix)
        existing = _read(path)
        if existing is not None and await _valid(store, existing):
            return None
        # Never rate limited: it is the operator's own key, used in bursts by the quick start and tools.
        token, _ = await store.create(ADMIN_KEY_NAME, ADMIN_SCOPES, rate_limit=0)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(path, token + "\n")
        return token
    finally:
        await client.aclose()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


async def _valid(store: KeyStore, token: str) -> bool:
    """The saved key still exists in this Redis with the same secret (the data may have been wiped)."""
    from conveyor.api.keys import split_key

    parts = split_key(token)
    if parts is None:
        return False
    key_id, secret_hash = parts
    stored = await store.client.hget(store.record_key(key_id), "hash")
    return bool(stored == secret_hash)


def ensure_admin_key(url: str, prefix: str, path: Path) -> str | None:
    """Create the admin key unless `path` holds a live one; returns the new key (to print once) or None."""
    token = asyncio.run(_ensure(url, prefix, path))
    if token is not None:
        os.chmod(path, 0o600)
    return token
