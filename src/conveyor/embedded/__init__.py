"""Embedded Valkey: with no REDIS_URL, Conveyor runs a private, durable server in its data directory.

`resolve_redis_url(settings)` is what commands call: REDIS_URL set means that URL (and no handle);
unset means the embedded server of `settings.data_dir`, shared by every process that uses it.
"""

from __future__ import annotations

from conveyor.embedded.config import EmbeddedConfig, server_binary
from conveyor.embedded.lifecycle import EmbeddedHandle, acquire, find_running
from conveyor.settings import Settings


def resolve_redis_url(settings: Settings) -> tuple[str, EmbeddedHandle | None]:
    """The URL to use, and the embedded handle to release on exit (None when REDIS_URL is set)."""
    if settings.redis_url:
        return settings.redis_url, None
    handle = acquire(EmbeddedConfig.from_settings(settings))
    return handle.url, handle


__all__ = [
    "EmbeddedConfig", "EmbeddedHandle", "acquire", "find_running", "resolve_redis_url", "server_binary",
]
