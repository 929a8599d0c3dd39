"""Per-queue figures the API's summaries lack: the last hour per minute, and the oldest waiting job.

Finished jobs sit in the `completed` and `failed` sorted sets scored by finish time, so a minute's
count is one ZCOUNT; sixty buckets per state cost one pipelined round trip per call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from conveyor.autoscaling.signals import oldest_waiting_ms
from conveyor.partitions import parts_of
from conveyor.queue import Queue
from conveyor.redis.clock import redis_now_ms

__all__ = ["BUCKETS", "BUCKET_MS", "QueueHistory", "queue_history", "redis_now_ms"]

BUCKET_MS = 60_000
BUCKETS = 60


@dataclass(frozen=True, slots=True)
class QueueHistory:
    """Completed and failed jobs per minute over the last hour (oldest first)."""

    completed: list[int]
    failed: list[int]
    oldest_waiting_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"completed": self.completed, "failed": self.failed,
                "oldest_waiting_ms": self.oldest_waiting_ms}


async def queue_history(queue: Queue) -> QueueHistory:
    """The last hour ending now on the clock of the node holding each partition, the clock that
    scored its finished jobs."""
    parts = parts_of(queue)  # a partitioned queue: summed over its partitions
    nows = await asyncio.gather(*(redis_now_ms(queue.client, part.keys.completed) for part in parts))
    async with queue.client.pipeline(transaction=False) as pipe:
        for part, now_ms in zip(parts, nows, strict=True):
            start = now_ms - BUCKETS * BUCKET_MS
            for key in (part.keys.completed, part.keys.failed):
                for i in range(BUCKETS):
                    lo = start + i * BUCKET_MS
                    pipe.zcount(key, lo, f"({lo + BUCKET_MS}")
        replies: list[Any] = await pipe.execute()
    rows = [[int(n) for n in replies[i:i + BUCKETS]] for i in range(0, len(replies), BUCKETS)]
    completed = [sum(col) for col in zip(*rows[0::2], strict=True)]
    failed = [sum(col) for col in zip(*rows[1::2], strict=True)]
    return QueueHistory(completed, failed, await oldest_waiting_ms(queue))
