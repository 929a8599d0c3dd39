"""The one JSON codec: every payload, result, option set and event field goes through here."""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

import orjson

from conveyor.errors import SerializationError

_SORTED = orjson.OPT_SORT_KEYS
# orjson writes NaN and ±Infinity as `null`: a silent change of the value. Such output holds the
# bytes `null`, so only output that does is walked for them (one scan of bytes in the common case).
_NULL = b"null"
_MAX_DEPTH = 512


def dumps(value: Any) -> bytes:
    """Encode compactly; raises SerializationError for values JSON cannot hold (NaN and Infinity
    included)."""
    try:
        out = orjson.dumps(value)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serialisable: {exc}") from None
    if _NULL in out:
        _refuse_non_finite(value)
    return out


def dumps_canonical(value: Any) -> bytes:
    """Encode with sorted keys, so equal data gives equal bytes (idempotency checks compare bytes)."""
    try:
        out = orjson.dumps(value, option=_SORTED)
    except TypeError as exc:
        raise SerializationError(f"value is not JSON-serialisable: {exc}") from None
    if _NULL in out:
        _refuse_non_finite(value)
    return out


def loads(raw: bytes | str | None) -> Any:
    """Decode; None stays None (a missing hash field)."""
    if raw is None:
        return None
    return orjson.loads(raw)


def _refuse_non_finite(value: Any) -> None:
    """Raise SerializationError naming where `value` holds a NaN or an Infinity (JSON has neither)."""
    if not _holds_non_finite(value):
        return
    where = _non_finite_at(value, "$", 0) or ("$", "a non-finite number")
    raise SerializationError(
        f"value holds {where[1]} at {where[0]}: JSON has no NaN or Infinity (use null or a string)")


def _holds_non_finite(value: Any) -> bool:
    """Whether a NaN or ±Infinity is in what orjson encodes of `value`: one flat pass over the plain
    types (payloads with nulls take it, so it must stay cheap); the rare others go the long way."""
    stack = [value]
    pop, push_all = stack.pop, stack.extend
    while stack:
        v = pop()
        t = type(v)
        if t is str or t is int or v is None or t is bool:
            continue
        if t is float:
            if not _NEG_INF < v < _INF:  # false for NaN too
                return True
        elif t is dict:
            push_all(v.values())
        elif t is list or t is tuple:
            push_all(v)
        elif _non_finite_at(v, "$", 0) is not None:
            return True
    return False


_INF = math.inf
_NEG_INF = -math.inf


def _non_finite_at(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """(path, repr) of the first non-finite float in what orjson encodes of `value`, else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, repr(value))
    if depth > _MAX_DEPTH:  # orjson refuses deeper values before this is reached
        return None
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    elif isinstance(value, enum.Enum):
        items = ((path, value.value),)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f"{path}.{f.name}", getattr(value, f.name, None)) for f in dataclasses.fields(value))
    else:
        return None
    for sub_path, sub in items:
        found = _non_finite_at(sub, sub_path, depth + 1)
        if found is not None:
            return found
    return None
