"""Where a partitioned queue's layouts are recorded, and how a reader that does not declare the
queue (the CLI, the API and dashboard for undeclared queues, the alerts probe) opens it whole.

The record is a small sorted set per queue (`redis/keys.py: partition_layout_key`): each partition
count the queue was used with, scored by the server time at which a producer or worker last began
using it as its current count (0 when it was only named as a previous count). A reader serves the most recently current
count and reads every other recorded one as a previous layout, so nothing a re-partition left behind
is hidden. The record holds at most MAX_PARTITIONS members and is removed by `obliterate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.queue import Queue
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import guarded
from conveyor.redis.keys import MAX_PARTITIONS, partition_layout_key, validate_queue_name


async def record_layout(
    client: RedisClient, prefix: str, name: str, current: int, previous: Sequence[int] = ()
) -> None:
    """The current count scored by the server's clock (producers' clocks may be skewed), previous
    counts kept (never lowered): one idempotent ZADD GT after one TIME."""
    members: dict[str, float] = {str(n): 0 for n in previous}
    members[str(current)] = await guarded(redis_now_ms(client), "reading the server's clock")
    await guarded(client.zadd(partition_layout_key(name, prefix), members, gt=True), "recording a partition layout")


def parse_layout(rows: Sequence[tuple[Any, Any]]) -> tuple[int, tuple[int, ...]] | None:
    """(current, previous counts) from the record's rows, ignoring anything malformed; None when
    no valid count is recorded (the queue is not partitioned)."""
    valid: list[tuple[float, int]] = []
    for member, score in rows:
        raw = member.decode() if isinstance(member, bytes) else str(member)
        if raw.isdigit() and 0 <= int(raw) <= MAX_PARTITIONS:  # 0: the plain queue, before partitioning
            valid.append((float(score), int(raw)))
    partitioned = [v for v in valid if v[1] >= 1]
    if not partitioned:
        return None
    current = max(partitioned)[1]
    return current, tuple(sorted({n for _, n in valid if n != current}))


async def read_layout(client: RedisClient, prefix: str, name: str) -> tuple[int, tuple[int, ...]] | None:
    key = partition_layout_key(name, prefix)
    rows: Any = await guarded(client.zrange(key, 0, MAX_PARTITIONS, withscores=True), "reading a partition layout")
    return parse_layout(rows)


async def open_queue(name: str, *, redis: RedisClient, prefix: str = "cv", **options: Any) -> Queue:
    """The queue `name` as Redis records it: a PartitionedQueue over every recorded layout when it is
    partitioned, a plain Queue otherwise (one read)."""
    from conveyor.partitions.queue import PartitionedQueue

    layout = await read_layout(redis, prefix, validate_queue_name(name))
    if layout is None:
        return Queue(name, redis=redis, prefix=prefix, **options)
    current, previous = layout
    return PartitionedQueue(name, partitions=current, previous=previous, redis=redis, prefix=prefix, **options)
