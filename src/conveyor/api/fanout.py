"""Reading many queues for one request a few at a time.

Each call in flight holds a Redis connection: a request over every queue in Redis that read them all
at once opened a connection per call, up to the whole pool, and every other request waited for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
QUEUES_AT_ONCE = 8  # each queue's view runs a few calls of its own at once


async def each_bounded(items: Iterable[T], read: Callable[[T], Awaitable[R]], limit: int = QUEUES_AT_ONCE) -> list[R]:
    """`read(item)` for every item, in order, at most `limit` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await read(item)

    return list(await asyncio.gather(*(one(item) for item in items)))
