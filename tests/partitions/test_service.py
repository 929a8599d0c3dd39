"""The worker service over a partitioned queue: its metrics sampler, paused flag and limits gauges
read every partition, and it records the layout for readers that do not declare the queue."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import Conveyor, JobContext, JobState
from conveyor.partitions import PartitionedQueue, open_queue
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient
from conveyor.service import WorkerService, plan_queues
from conveyor.settings import Settings
from tests.conftest import wait_for
from tests.service.test_process import metric

PARTS = 3
FAST = dict(metrics_interval_s=0.1, heartbeat_s=0.5, stats_interval_s=0, restart_backoff_max_s=1.0, lease_ms=5000)


async def test_the_sampler_reads_every_partition(backend_url: str, client: RedisClient, qname: str) -> None:
    app = Conveyor(backend_url)
    app.declare_queue(qname, partitions=PARTS, concurrency=2)
    gate = asyncio.Event()

    @app.task(queue=qname)
    async def hold(ctx: JobContext, data: Any) -> None:
        await asyncio.wait_for(gate.wait(), 120)

    queue = app.queue(qname)
    assert isinstance(queue, PartitionedQueue)
    await queue.pause()  # nothing runs until the depths are read
    await queue.add_bulk([{"name": "hold", "data": i} for i in range(PARTS * 3)])
    assert [(await Queue.counts(p))[JobState.WAITING] for p in queue.parts] == [3, 3, 3]
    service = WorkerService(app, Settings(**FAST), plan_queues(app, None, {}))
    task = asyncio.create_task(service.run())
    try:
        await wait_for(lambda: service.state == "running", timeout=60, what="service running")

        def depth(state: str) -> float:
            return metric(service.metrics.render().decode(), "conveyor_queue_depth", queue=qname, state=state)

        await wait_for(lambda: depth("waiting") == PARTS * 3, timeout=60, what="every partition's waiting jobs")
        await wait_for(lambda: service.paused[qname], timeout=60, what="the paused flag sampled")
        opened = await open_queue(qname, redis=client)  # the layout, as readers that do not declare it see it
        assert isinstance(opened, PartitionedQueue) and opened.partition_count == PARTS
        await queue.resume()
        await wait_for(lambda: depth("active") == 2, timeout=60, what="the two slots busy")
        await wait_for(lambda: not service.paused[qname], timeout=60, what="the resume sampled")
        gate.set()
        await wait_for(lambda: depth("completed") == PARTS * 3, timeout=120, what="every job completed")
    finally:
        gate.set()
        service.request_stop()
        await asyncio.wait_for(task, 60)
        await queue.obliterate(force=True)
        await app.close()
