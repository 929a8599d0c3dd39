"""Commands packed in C (hiredis) on the asyncio connections.

redis-py's synchronous connections pack commands with hiredis when it is installed; its asyncio
connections pack them in Python, at about 1.5 µs per argument: ~20 µs for an enqueue's script call
and several hundred for a worker's trip recording 50 outcomes, on the enqueue-to-start path and in
every trip. This gives every asyncio connection Conveyor opens the synchronous client's packer: the
same bytes on the wire, the same split of a multi-word command name, the same DataError for a value
Redis cannot take (None, a bool, another object).
"""

from __future__ import annotations

import sys
from typing import Any

import hiredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

_PACK = getattr(hiredis, "pack_command", None)


class HiredisPacking:
    """Mixin for an asyncio connection class: `pack_command` in C. Only for connections that encode
    as UTF-8 with strict errors, hiredis's only encoding (see `packing_class`)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [_PACK(tuple(bytes(a) if isinstance(a, memoryview) else a for a in args))]  # type: ignore[misc]
        except TypeError:
            _, value, traceback = sys.exc_info()
            raise DataError(value).with_traceback(traceback) from None


_CLASSES: dict[type[Any], type[Any]] = {}


def packing_class(base: type[Any]) -> type[Any]:
    """`base` (an asyncio connection class) with hiredis packing; one class per base."""
    if _PACK is None or issubclass(base, HiredisPacking):
        return base
    made = _CLASSES.get(base)
    if made is None:
        made = _CLASSES[base] = type(base.__name__, (HiredisPacking, base), {"__module__": __name__})
    return made


def _utf8_strict(kwargs: dict[str, Any]) -> bool:
    return (str(kwargs.get("encoding", "utf-8")).lower().replace("_", "-") in {"utf-8", "utf8"}
            and kwargs.get("encoding_errors", "strict") == "strict")


def pack_in_c(client: Any) -> None:
    """Switch the connections `client` will open to hiredis packing: a standalone or Sentinel
    client's pool, or a Cluster client's nodes (the ones known now and those it discovers). Clients
    with another encoding keep redis-py's packer."""
    if isinstance(client, RedisCluster):
        kwargs = client.connection_kwargs
        if not _utf8_strict(kwargs):
            return
        kwargs["connection_class"] = packing_class(kwargs.get("connection_class") or Connection)
        for node in client.nodes_manager.startup_nodes.values():
            node.connection_class = packing_class(node.connection_class)
        return
    pool = client.connection_pool
    if _utf8_strict(pool.connection_kwargs):
        pool.connection_class = packing_class(pool.connection_class)
