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

from conveyor.job import JobState
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


async def read_layouts(
    client: RedisClient, prefix: str, names: Sequence[str]
) -> dict[str, tuple[int, tuple[int, ...]] | None]:
    """`read_layout` of many queues in one round trip (the records share one slot)."""
    if not names:
        return {}
    async with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.zrange(partition_layout_key(name, prefix), 0, MAX_PARTITIONS, withscores=True)
        rows: list[Any] = await guarded(pipe.execute(), "reading partition layouts")
    return {name: parse_layout(r) for name, r in zip(names, rows, strict=True)}


async def unserved_jobs(queue: Queue, layout: tuple[int, tuple[int, ...]] | None) -> dict[int, int]:
    """Jobs waiting, delayed or active in each layout of `layout` (the queue's record, see
    `read_layouts`) that `queue` (as a worker serves it) does not cover, by partition count (0: the
    plain queue). A producer using another partition count than the workers puts jobs there that no
    one runs, and nothing else says so."""
    from conveyor.partitions.queue import layout_tags
    from conveyor.partitions.reading import parts_of

    recorded = {0} if layout is None else {0, layout[0], *layout[1]}  # 0: a plain producer records none
    served = {part.keys.tag for part in parts_of(queue)}
    found: dict[int, int] = {}
    for count in sorted(recorded):
        for tag in layout_tags(queue.name, count):
            if tag in served:
                continue
            counts = await Queue(queue.name, redis=queue.client, prefix=queue.prefix, partition_tag=tag).counts()
            pending = sum(counts[s] for s in (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE))
            if pending:
                found[count] = found.get(count, 0) + pending
    return found
