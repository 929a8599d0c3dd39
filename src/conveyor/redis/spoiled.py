"""Keys edited by hand into another Redis type. A script that meets one where it expects its own
type fails with redis's WRONGTYPE, which says nothing of the key; this turns that error into
`SpoiledKeyError` naming the script and the key(s) of the wrong type (read with TYPE on the error
path only), so the operator knows what to delete or repair."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from conveyor.errors import SpoiledKeyError
from conveyor.redis.faults import redis_call

# The type each queue key holds, by the first part of its name after the queue's tag `cv:{q}:`
# (docs/internals.md, "Keys"). Keys not listed are not checked.
KEY_TYPES: dict[str, str] = {
    "meta": "hash", "limits": "hash", "gs": "hash", "job": "hash",
    "ready": "zset", "delayed": "zset", "active": "zset", "completed": "zset", "failed": "zset",
    "cancelled": "zset", "waiting-children": "zset", "gq": "zset", "gpark": "zset", "gr": "zset",
    "hold": "zset", "groups": "set", "gcap": "set", "events": "stream", "wake": "list", "idem": "string",
    "outbox": "hash",
}


# The error of common.lua's `must_be`, which names a key a script derives from its arguments (a
# group's keys, the queues of a flow) and checked before its first write.
_MUST_BE = re.compile(r"WRONGTYPE (\S+) holds a (\w+), not a (\w+)")


def is_wrong_type(exc: BaseException) -> bool:
    return "WRONGTYPE" in str(exc)


def _named(exc: BaseException | None) -> list[str]:
    """The key `must_be` names in `exc`'s message, as `_message` lists it (none for a bare WRONGTYPE)."""
    m = _MUST_BE.search(str(exc)) if exc is not None else None
    return [f"{m[1]} is a {m[2]}, not a {m[3]}"] if m else []


def expected_type(key: str) -> str | None:
    """The type `key` must hold, or None for a key this table does not know."""
    _, sep, rest = key.rpartition("}:")
    return KEY_TYPES.get(rest.split(":", 1)[0]) if sep else None


async def spoiled_key_error(
    client: Any, script: str, keys: Sequence[str], exc: BaseException | None = None
) -> SpoiledKeyError:
    """The error for `script`'s WRONGTYPE `exc`: names each of its KEYS that holds another type, and
    the key the script's own check named."""
    wrong = _named(exc)
    try:
        for key in keys:
            want = expected_type(key)
            if want is not None:
                held = await client.type(key)
                if held not in (want, "none") and not any(w.startswith(key + " ") for w in wrong):
                    wrong.append(f"{key} is a {held}, not a {want}")
    except RedisError:
        wrong = _named(exc)
    return SpoiledKeyError(_message(script, wrong))


def spoiled_key_error_sync(
    client: Any, script: str, keys: Sequence[str], exc: BaseException | None = None
) -> SpoiledKeyError:
    """`spoiled_key_error` on redis-py's synchronous client."""
    wrong = _named(exc)
    try:
        for key in keys:
            want = expected_type(key)
            if want is not None:
                held = client.type(key)
                if held not in (want, "none") and not any(w.startswith(key + " ") for w in wrong):
                    wrong.append(f"{key} is a {held}, not a {want}")
    except RedisError:
        wrong = _named(exc)
    return SpoiledKeyError(_message(script, wrong))


async def refuse_spoiled(client: Any, what: str, keys: Sequence[str]) -> None:
    """Raise SpoiledKeyError for `what` when one of `keys` holds another type than its own (one
    pipeline of TYPE reads): the check a write made of several scripts (a flow on a Cluster, one
    script per slot) makes before the first of them, as each script makes it before its own writes."""
    known = [k for k in dict.fromkeys(keys) if expected_type(k) is not None]
    if not known:
        return
    pipe = client.pipeline(transaction=False)
    for key in known:
        pipe.type(key)
    held = await redis_call(pipe.execute())
    wrong = [f"{key} is a {t}, not a {expected_type(key)}" for key, t in zip(known, held, strict=True)
             if t not in (expected_type(key), "none")]
    if wrong:
        raise SpoiledKeyError(_message(what, wrong))


def _message(script: str, wrong: list[str]) -> str:
    what = "; ".join(wrong) if wrong else (
        "a key it derives from its arguments (a job record or an idempotency key) holds another type")
    return f"{script} met a key of the wrong Redis type (edited by hand?): {what}; delete or repair it"


_DROP_NON_LISTS = """
for _, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key).ok
  if t ~= 'list' and t ~= 'none' then redis.call('DEL', key) end
end
return 0
"""


async def replace_spoiled_lists(client: Any, keys: Sequence[str]) -> None:
    """Delete those of `keys` (wake and park-interrupt lists: markers only) that hold another type,
    in one script, so a list a producer wrote meanwhile is never taken for the spoiled value."""
    await client.eval(_DROP_NON_LISTS, len(keys), *keys)
