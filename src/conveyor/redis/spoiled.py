"""Keys edited by hand into another Redis type. A script that meets one where it expects its own
type fails with redis's WRONGTYPE, which says nothing of the key; this turns that error into
`SpoiledKeyError` naming the script and the key(s) of the wrong type (read with TYPE on the error
path only), so the operator knows what to delete or repair."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from conveyor.errors import SpoiledKeyError

# The type each queue key holds, by the first part of its name after the queue's tag `cv:{q}:`
# (docs/internals.md, "Keys"). Keys not listed are not checked.
KEY_TYPES: dict[str, str] = {
    "meta": "hash", "limits": "hash", "gs": "hash", "job": "hash",
    "ready": "zset", "delayed": "zset", "active": "zset", "completed": "zset", "failed": "zset",
    "cancelled": "zset", "waiting-children": "zset", "gq": "zset", "gpark": "zset", "gr": "zset",
    "hold": "zset", "groups": "set", "events": "stream", "wake": "list", "idem": "string",
}


def is_wrong_type(exc: BaseException) -> bool:
    return "WRONGTYPE" in str(exc)


def expected_type(key: str) -> str | None:
    """The type `key` must hold, or None for a key this table does not know."""
    _, sep, rest = key.rpartition("}:")
    return KEY_TYPES.get(rest.split(":", 1)[0]) if sep else None


async def spoiled_key_error(client: Any, script: str, keys: Sequence[str]) -> SpoiledKeyError:
    """The error for `script`'s WRONGTYPE: names each of its KEYS that holds another type."""
    wrong: list[str] = []
    try:
        for key in keys:
            want = expected_type(key)
            if want is not None:
                held = await client.type(key)
                if held not in (want, "none"):
                    wrong.append(f"{key} is a {held}, not a {want}")
    except RedisError:
        wrong = []
    return SpoiledKeyError(_message(script, wrong))


def spoiled_key_error_sync(client: Any, script: str, keys: Sequence[str]) -> SpoiledKeyError:
    """`spoiled_key_error` on redis-py's synchronous client."""
    wrong: list[str] = []
    try:
        for key in keys:
            want = expected_type(key)
            if want is not None:
                held = client.type(key)
                if held not in (want, "none"):
                    wrong.append(f"{key} is a {held}, not a {want}")
    except RedisError:
        wrong = []
    return SpoiledKeyError(_message(script, wrong))


def _message(script: str, wrong: list[str]) -> str:
    what = "; ".join(wrong) if wrong else (
        "a key it derives from its arguments (a job record or an idempotency key) holds another type")
    return f"{script} met a key of the wrong Redis type (edited by hand?): {what}; delete or repair it"
