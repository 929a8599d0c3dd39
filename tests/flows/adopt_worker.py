"""A worker process that adopts its dynamic children and is then killed before writing them:
`python -m tests.flows.adopt_worker URL PARENT_QUEUE CHILD_QUEUE`.

Its handler adds three children; the write of the children (after the adoption) says so in Redis
(list `adopted:<parent queue>`) and hangs, waiting for the test to SIGKILL the process.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.flows import FlowNode, dynamic


async def main(url: str, queue_name: str, child_queue: str) -> None:
    queue = Queue(queue_name, redis=url)

    async def spawn(ctx: JobContext, data: Any) -> int:
        children = await ctx.children()
        if not children.all_ended:
            await ctx.add_children([FlowNode(child_queue, "child", i) for i in range(3)])
            ctx.wait_for_children()
        return sum(children.results.values())

    async def hang(*args: Any, **kwargs: Any) -> list[bool]:
        await queue.client.rpush(f"adopted:{queue_name}", "adopted")
        await asyncio.Event().wait()
        return []

    dynamic.write_nodes = hang  # type: ignore[assignment]
    worker = Worker(queue, {"spawn": spawn}, lease_ms=1000, heartbeat_ms=200, stalled_interval_ms=200)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
