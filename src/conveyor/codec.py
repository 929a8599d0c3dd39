"""The one JSON codec: every payload, result, option set and event field goes through here."""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.errors import SerializationError

_SORTED = orjson.OPT_SORT_KEYS


def dumps(value: Any) -> bytes:
    """Encode compactly; raises SerializationError for values JSON cannot hold."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serialisable: {exc}") from None


def dumps_canonical(value: Any) -> bytes:
    """Encode with sorted keys, so equal data gives equal bytes (idempotency checks compare bytes)."""
    try:
        return orjson.dumps(value, option=_SORTED)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serialisable: {exc}") from None


def loads(raw: bytes | str | None) -> Any:
    """Decode; None stays None (a missing hash field)."""
    if raw is None:
        return None
    return orjson.loads(raw)
