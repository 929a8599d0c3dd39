"""A worker process for the crash test: `python -m tests.integration.crash_worker URL QUEUE WORKER_ID`."""

from __future__ import annotations

import asyncio
import random
import sys
from typing import Any

from conveyor import JobContext, Queue, Worker


async def main(url: str, queue_name: str, worker_id: str) -> None:
    queue = Queue(queue_name, redis=url)

    async def work(ctx: JobContext, data: Any) -> str:
        await asyncio.sleep(random.uniform(0.005, 0.03))
        # Record every run (a job may run twice: at-least-once); the completion itself is fenced.
        await queue.client.rpush(f"crash-runs:{queue_name}", f"{ctx.job_id}:{ctx.token}:{worker_id}")
        return worker_id

    worker = Worker(queue, {"work": work}, concurrency=20, lease_ms=1000, heartbeat_ms=200,
                    stalled_interval_ms=200, worker_id=worker_id)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
