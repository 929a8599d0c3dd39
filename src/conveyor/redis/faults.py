"""The one table of Redis faults: every error that means "the server or the connection is not usable
right now" becomes `ConnectionFailedError`, which every loop of the engine backs off on and retries.

A fault says nothing about whether the command ran: a reply lost to a reset connection or a timeout
may follow a command the server executed. Callers that resend must be idempotent (the hot-path
trips are, see docs/internals.md); nothing here resends anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
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

# Errors a Cluster node gives a script's own redis.call (as a plain ERR reply): a key of a slot that is
# migrating (already moved away, or not there yet: "non local key"), or the cluster down mid-script.
# Scripts read every key before their first write, so such an error leaves nothing half-written.
_SCRIPT_CLUSTER_FAULTS = ("Script attempted to access a non local key in a cluster node",
                          "Script attempted to execute a command while the cluster is down",
                          "Script attempted to execute a write command while the cluster is down")

# redis-py's Cluster client rebuilds its slot map after a fault; while nodes restart or the cluster
# reconfigures it may find no reachable node, nodes that disagree, or uncovered slots. (Its other
# RedisClusterExceptions are programming errors: a key-less command, keys of several slots.)
_CLUSTER_MAP_FAULTS = ("cannot be connected", "could not agree", "are not covered", "No targets were found")

# redis-py rewrites the error reply of a command in a pipeline into a message of its own ("Command # 1
# (HGET k f) of pipeline caused error: ('BUSY Redis is busy ...',)"), and a MULTI/EXEC the server
# discarded reads "Transaction discarded because of: BUSY ...": the server's reply is what follows.
_WRAPPED_REPLY = re.compile(r"^(?:Command # \d+ \(.*\) of pipeline caused error: \(?['\"]?"
                            r"|Transaction discarded because of: )", re.DOTALL)


def _reply_text(text: str) -> str:
    """The server's reply in an error message redis-py may have wrapped (see _WRAPPED_REPLY)."""
    wrapped = _WRAPPED_REPLY.match(text)
    return text[wrapped.end():] if wrapped else text


# uvloop raises RuntimeError("unable to perform operation on <TCPTransport closed=True ...>; the
# handler is closed") when a pooled connection the peer closed is reused.
_CLOSED_TRANSPORT = ("unable to perform operation on", "closed=True", "Transport is closed")


# redis-py's asyncio Cluster client can hand a command to a connection that another task closed under
# it (its reader and writer set to None while the slot map is rebuilt after a fault): the send then
# fails with AttributeError "'NoneType' object has no attribute 'writelines'" (or 'drain', 'read'...)
# raised inside redis-py. Only such an error raised inside redis-py's own code is a fault.
_CLOSED_UNDER_US = "'NoneType' object has no attribute "


def is_fault(exc: BaseException) -> bool:
    """True when `exc` means Redis (or the way to it) is not usable now and a later call may work."""
    if isinstance(exc, _FAULT_TYPES):
        return True
    if isinstance(exc, ResponseError):
        status = getattr(exc, "status_code", None)
        text = _reply_text(str(exc))
        return (f"{status} " in _FAULT_REPLIES or text.startswith(_FAULT_REPLIES)
                or any(marker in text for marker in _SCRIPT_CLUSTER_FAULTS))
    if isinstance(exc, AttributeError):
        return str(exc).startswith(_CLOSED_UNDER_US) and _raised_in_redis_py(exc)
    if isinstance(exc, RedisClusterException):
        text = str(exc)
        return any(marker in text for marker in _CLUSTER_MAP_FAULTS)
    if isinstance(exc, RuntimeError):
        text = str(exc)
        return any(marker in text for marker in _CLOSED_TRANSPORT)
    return False


# What a client is told a fault is (an API's 503): the reply code or error class that names it, and a
# fixed sentence (never the server's own text, which may carry addresses).
_SUMMARIES = (
    (("OOM", "OutOfMemoryError"), "Redis is out of memory (maxmemory reached): writes fail until memory is freed"),
    (("READONLY", "ReadOnlyError"), "Redis is read-only (a replica, or a failover in progress)"),
    (("LOADING", "BusyLoadingError"), "Redis is loading its data set"),
    (("BUSY",), "Redis is busy running a script past its time limit"),
    (("NOREPLICAS",), "Redis has too few replicas to accept writes (min-replicas-to-write)"),
    (("MASTERDOWN",), "Redis is a replica that lost its primary"),
    (("CLUSTERDOWN", "ClusterDownError", "cluster is down"), "the Redis Cluster is down"),
)
UNREACHABLE = "Redis is unreachable"


def fault_summary(exc: BaseException) -> str:
    """One sentence saying why Redis cannot serve, from a fault or the `ConnectionFailedError` it
    became (its message and cause); "Redis is unreachable" when nothing more specific is known."""
    texts = []
    seen: BaseException | None = exc
    for _ in range(5):  # the fault, the ConnectionFailedError made of it, a wrapper or two
        if seen is None:
            break
        texts.append(f"{type(seen).__name__}: {_reply_text(str(seen))}")
        seen = seen.__cause__ or seen.__context__
    for markers, sentence in _SUMMARIES:
        for text in texts:
            if any(re.search(rf"\b{m}\b", text) for m in markers):
                return sentence
    return UNREACHABLE


def as_fault(exc: BaseException, what: str = "") -> ConnectionFailedError:
    """The `ConnectionFailedError` to raise for a fault (chained to it by the caller)."""
    where = f" while {what}" if what else ""
    return ConnectionFailedError(f"Redis not usable{where}: {type(exc).__name__}: {exc}")


@contextmanager
def faults_as_connection_failed(what: str = "") -> Iterator[None]:
    """Inside: every fault comes out as `ConnectionFailedError`, anything else unchanged."""
    try:
        yield
    except ConnectionFailedError:
        raise
    except Exception as exc:
        if is_fault(exc):
            raise as_fault(exc, what) from exc
        raise


def guarded_sync(fn: Callable[..., T], *args: Any, what: str = "") -> T:
    """`fn(*args)` (redis-py's synchronous client) with faults as ConnectionFailedError."""
    with faults_as_connection_failed(what):
        return fn(*args)


async def guarded(awaitable: Awaitable[T], what: str = "") -> T:
    """Await one Redis call; faults come out as `ConnectionFailedError`, anything else unchanged."""
    with faults_as_connection_failed(what):
        return await awaitable


async def redis_call(awaitable: Awaitable[Any]) -> Any:
    """`guarded` for a redis-py call whose reply the caller reads as its command returns it (redis-py's
    own reply types are loose unions): the one way every room makes a single Redis call."""
    return await guarded(awaitable)


def _raised_in_redis_py(exc: BaseException) -> bool:
    """True when the innermost frame of `exc`'s traceback is redis-py's code (not ours, not a user's)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and (module == "redis" or module.startswith("redis."))


START_FIRST_DELAY_S = 0.2
START_MAX_DELAY_S = 5.0


def is_startup_fault(exc: BaseException) -> bool:
    """Redis is not usable yet (down, loading, read-only, a Cluster without a slot owner, a closed
    transport: the fault table above), so starting is retried rather than given up."""
    return isinstance(exc, ConnectionFailedError | TimeoutError) or is_fault(exc)


async def until_usable(
    step: Callable[[], Awaitable[None]], stop: asyncio.Event, on_retry: Callable[[BaseException, float], None],
) -> bool:
    """Run `step` until it succeeds (True) or `stop` is set (False), backing off after each Redis
    fault (`on_retry(error, delay)` says so first), so a process that starts while Redis is down
    waits for it instead of exiting. Errors that are not Redis faults (a bad schedule) propagate."""
    delay = START_FIRST_DELAY_S
    while not stop.is_set():
        try:
            await step()
            return True
        except Exception as exc:
            if not is_startup_fault(exc):
                raise
            on_retry(exc, delay)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await stop.wait()
        delay = min(delay * 2, START_MAX_DELAY_S)
    return False
