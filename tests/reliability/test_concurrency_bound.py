"""A worker at the concurrency bound keeps every lease alive (one heartbeat renews them all, in
slices), and concurrency above the bound is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import ConfigurationError, JobContext, JobState, Queue, Worker
from conveyor.worker.settings import MAX_CONCURRENCY
from tests.conftest import running, wait_for


def test_concurrency_has_a_validated_bound(queue: Queue) -> None:
    for bad in (0, MAX_CONCURRENCY + 1, 2.5, True):
        with pytest.raises(ConfigurationError, match="concurrency"):
            Worker(queue, {}, concurrency=bad)  # type: ignore[arg-type]


async def test_a_worker_at_the_bound_keeps_every_lease_alive(redis_url: str, qname: str) -> None:
    queue = Queue(qname, redis=redis_url)
    release = asyncio.Event()

    async def waits(ctx: JobContext, data: Any) -> None:
        await release.wait()

    await queue.add_bulk([{"name": "w", "data": None} for _ in range(MAX_CONCURRENCY)])
    worker = Worker(queue, {"w": waits}, concurrency=MAX_CONCURRENCY, lease_ms=10_000, heartbeat_ms=500,
                    stalled_interval_ms=500)
    async with running(worker, grace_s=60):
        await wait_for(lambda: worker.active == MAX_CONCURRENCY, timeout=120, what="every slot taken")
        earliest = await _earliest_deadline(queue)
        beats = worker.keeper.calls
        # Two more heartbeats, each renewing all 10,000 leases, and sweeps meanwhile.
        await wait_for(lambda: worker.keeper.calls >= beats + 2, timeout=60, what="two heartbeats")
        assert await _earliest_deadline(queue) > earliest, "every lease was renewed"
        now_ms = int((await queue.client.time())[0]) * 1000
        assert await queue.client.zcount(queue.keys.active, "-inf", now_ms) == 0, "no lease has lapsed"
        assert await queue.client.zcard(queue.keys.active) == MAX_CONCURRENCY
        assert worker.stats.lost == 0
        release.set()
        await wait_for(lambda: worker.stats.succeeded == MAX_CONCURRENCY, timeout=120, what="all done")
    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == MAX_CONCURRENCY and counts[JobState.ACTIVE] == 0
    await queue.obliterate(force=True)
    await queue.close()


async def _earliest_deadline(queue: Queue) -> float:
    first = await queue.client.zrange(queue.keys.active, 0, 0, withscores=True)
    return float(first[0][1])
