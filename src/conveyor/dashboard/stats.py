"""Per-queue figures the API's summaries lack: the last hour per minute, and the oldest waiting job.

Finished jobs sit in the `completed` and `failed` sorted sets scored by finish time, so a minute's
count is one ZCOUNT; sixty buckets per state cost one pipelined round trip per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conveyor.autoscaling.signals import oldest_waiting_ms
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


async def queue_history(queue: Queue, now_ms: int) -> QueueHistory:
    k = queue.keys
    start = now_ms - BUCKETS * BUCKET_MS
    async with queue.client.pipeline(transaction=False) as pipe:
        for key in (k.completed, k.failed):
            for i in range(BUCKETS):
                lo = start + i * BUCKET_MS
                pipe.zcount(key, lo, f"({lo + BUCKET_MS}")
        replies: list[Any] = await pipe.execute()
    completed = [int(n) for n in replies[:BUCKETS]]
    failed = [int(n) for n in replies[BUCKETS:]]
    return QueueHistory(completed, failed, await oldest_waiting_ms(queue, now_ms))
