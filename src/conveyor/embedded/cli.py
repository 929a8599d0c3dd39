"""Every command that talks to Redis runs on the embedded server when REDIS_URL is unset.

The CLI's group callback calls `embedded_for_command` before the command runs: it acquires the
embedded server and exports its URL as REDIS_URL, so `conveyor worker`, `conveyor api`, `conveyor
keys` ... need no change of their own. The lease is released when the process exits.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from conveyor.embedded import EmbeddedHandle, resolve_redis_url
from conveyor.errors import ConfigurationError
from conveyor.settings import Settings

# Commands that never need Redis, or that manage the embedded server themselves.
NO_REDIS_COMMANDS = frozenset({"up", "version"})


def embedded_for_command(command: str | None, argv: Sequence[str]) -> EmbeddedHandle | None:
    """Acquire the embedded server for `command` unless it has a URL, needs none, or only shows help."""
    if command is None or command in NO_REDIS_COMMANDS or os.environ.get("REDIS_URL"):
        return None
    if any(a in ("--help", "--redis-url") or a.startswith("--redis-url=") for a in argv):
        return None
    try:
        settings = Settings.from_env()
    except ConfigurationError:
        return None  # the command reads the settings again and reports the error itself
    url, handle = resolve_redis_url(settings)
    os.environ["REDIS_URL"] = url
    return handle
