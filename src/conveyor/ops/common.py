"""What every operator command shares: finding the server, one-line errors, JSON or table output."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from conveyor.discovery import resolve_redis_url
from conveyor.errors import ConnectionFailedError, ConveyorError
from conveyor.partitions import open_queue
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient, connect, redact
from conveyor.redis.faults import is_fault
from conveyor.redis.keys import registry_key, validate_queue_name
from conveyor.settings import Settings

T = TypeVar("T")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
RedisOpt = Annotated[
    str | None,
    typer.Option("--redis-url", help="Redis URL (default: REDIS_URL, else the project's embedded server)."),
]
PrefixOpt = Annotated[str | None, typer.Option("--prefix", help="Key prefix (env CONVEYOR_PREFIX, default cv).")]
QueueArg = Annotated[str, typer.Argument(help="Queue name.")]
IdArg = Annotated[str, typer.Argument(help="Job id.")]


@dataclass(frozen=True, slots=True)
class Target:
    """The server a command talks to."""

    client: RedisClient
    prefix: str
    url: str

    def queue(self, name: str) -> Queue:
        """A plain handle (no Redis call); `opened` also finds the partitions of a partitioned queue."""
        return Queue(validate_queue_name(name), redis=self.client, prefix=self.prefix)

    async def opened(self, name: str) -> Queue:
        """The queue as Redis records it: a partitioned queue over every partition, else plain."""
        return await open_queue(validate_queue_name(name), redis=self.client, prefix=self.prefix)

    async def existing_queue(self, name: str) -> Queue:
        """The queue, or an error when Redis has never seen it (a typo should not pass silently)."""
        queue = await self.opened(name)
        known = await self.client.sismember(registry_key(self.prefix), name)
        if not known and not await self.client.exists(queue.keys.meta, queue.keys.ready, queue.keys.delayed):
            fail(f"queue {name!r} not found (`conveyor queues` lists the queues in Redis)")
        return queue


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr and a non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


Failure = Callable[[Exception, str], tuple[str, int] | None]
"""How a command words an error met while finding or using the server at a URL: the message and exit
status, or None to let the error go up."""


def operator_failure(exc: Exception, url: str) -> tuple[str, int] | None:
    """The operator commands: every Conveyor or Redis error is one line and exit status 1."""
    if isinstance(exc, ConveyorError):
        return redis_failure(exc, url) or str(exc), 1
    return redis_failure(exc, url) or f"Redis at {redact(url)} failed: {exc}", 1


def run(
    redis_url: str | None, prefix: str | None, fn: Callable[[Target], Awaitable[T]],
    failure: Failure = operator_failure,
) -> T:
    """Find the server (REDIS_URL, else the project's embedded one), run `fn`, close the client; an
    error on the way ends the command as `failure` words it."""
    url = ""
    try:
        settings = Settings.from_env(redis_url=redis_url, prefix=prefix)
        url = resolve_redis_url(settings.redis_url)

        async def go() -> T:
            client = connect(url)
            try:
                return await fn(Target(client, settings.prefix, url))
            finally:
                await client.aclose()

        return asyncio.run(go())
    except (ConveyorError, RedisError, RedisClusterException, OSError) as exc:
        outcome = failure(exc, url)
        if outcome is None:
            raise
        fail(*outcome)


def redis_failure(exc: BaseException, url: str) -> str | None:
    """The one line for an error of Redis or of the way to it, None for any other error. A Cluster
    none of whose nodes answers (or that is no Cluster) raises RedisClusterException, which is not a
    RedisError, from whichever call first needs the slot map."""
    if isinstance(exc, ConnectionFailedError | RedisConnectionError | RedisTimeoutError | OSError) or (
        isinstance(exc, RedisClusterException) and is_fault(exc)
    ):
        return f"Redis at {redact(url)} is unreachable: {exc.__cause__ or exc}"
    if isinstance(exc, RedisError | RedisClusterException):
        return f"Redis at {redact(url)} failed: {exc}"
    return None


def print_json(document: Any) -> None:
    typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2, default=str).decode())


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned on the widest cell; None shows as '-'."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def age(ms: int | float | None) -> str | None:
    """A duration in ms as '45s', '12m', '3h', '2d'."""
    if ms is None:
        return None
    s = max(0, int(ms // 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def short(text: Any, width: int = 60) -> str:
    value = " ".join(str(text).split())
    return value if len(value) <= width else value[: width - 1] + "…"
