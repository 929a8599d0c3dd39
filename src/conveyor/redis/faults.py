"""The one table of Redis faults: every error that means "the server or the connection is not usable
right now" becomes `ConnectionFailedError`, which every loop of the engine backs off on and retries.

A fault says nothing about whether the command ran: a reply lost to a reset connection or a timeout
may follow a command the server executed. Callers that resend must be idempotent (the hot-path
trips are, see docs/internals.md); nothing here resends anything.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.errors import ConnectionFailedError

T = TypeVar("T")

# Error classes redis-py raises for a server or connection that cannot serve us now:
# connection and timeout errors (LOADING is a ConnectionError subclass, so is a full pool),
# CLUSTERDOWN/MASTERDOWN, a slot no node covers, TRYAGAIN while keys of a slot migrate, MOVED/ASK
# left over after redis-py's own redirections, READONLY from a replica (a failover in progress),
# OOM (noeviction at maxmemory: writes wait until memory is freed), and OSError (resets, refusals).
_FAULT_TYPES: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    SlotNotCoveredError,
    TryAgainError,
    AskError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,
)

# Replies redis-py leaves as a plain ResponseError: a script running past busy-reply-threshold
# (BUSY), a replica without its master (MASTERDOWN), min-replicas-to-write unmet (NOREPLICAS), a
# blocked call released by a role change (UNBLOCKED), and the same codes when a script's redis.call
# hit them.
_FAULT_REPLIES = ("BUSY ", "LOADING ", "READONLY ", "MASTERDOWN ", "CLUSTERDOWN ", "TRYAGAIN ", "NOREPLICAS ",
                  "UNBLOCKED ", "OOM ", "MOVED ", "ASK ")

# uvloop raises RuntimeError("unable to perform operation on <TCPTransport closed=True ...>; the
# handler is closed") when a pooled connection the peer closed is reused.
_CLOSED_TRANSPORT = ("unable to perform operation on", "closed=True", "Transport is closed")


def is_fault(exc: BaseException) -> bool:
    """True when `exc` means Redis (or the way to it) is not usable now and a later call may work."""
    if isinstance(exc, _FAULT_TYPES):
        return True
    if isinstance(exc, ResponseError):
        status = getattr(exc, "status_code", None)
        return f"{status} " in _FAULT_REPLIES or str(exc).startswith(_FAULT_REPLIES)
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(marker in text for marker in _CLOSED_TRANSPORT)
    return False


def as_fault(exc: BaseException, what: str = "") -> ConnectionFailedError:
    """The `ConnectionFailedError` to raise for a fault (chained to it by the caller)."""
    where = f" while {what}" if what else ""
    return ConnectionFailedError(f"Redis not usable{where}: {type(exc).__name__}: {exc}")


async def guarded(awaitable: Awaitable[T], what: str = "") -> T:
    """Await one Redis call; faults come out as `ConnectionFailedError`, anything else unchanged."""
    try:
        return await awaitable
    except Exception as exc:
        if is_fault(exc):
            raise as_fault(exc, what) from exc
        raise
