"""A worker process for the hand-over crash tests:
`python -m tests.flows.handover_worker URL QUEUE MODE`.

MODE "normal" runs the children's handler and the mover; "no-mover" runs the handler but never
delivers (the child's half is written, the parent's is not); "hang-after-deliver" delivers one
record, says so in Redis, and hangs before deleting it, waiting to be killed.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from conveyor import JobContext, Queue, Worker


async def main(url: str, queue_name: str, mode: str) -> None:
    queue = Queue(queue_name, redis=url)

    async def child(ctx: JobContext, data: Any) -> int:
        await queue.client.rpush(f"handover-runs:{queue_name}", ctx.job_id)
        return int(data)

    worker = Worker(queue, {"child": child}, concurrency=10, lease_ms=1000, heartbeat_ms=200,
                    stalled_interval_ms=200)
    if mode == "no-mover":
        async def never() -> None:
            await asyncio.Event().wait()
        worker.mover.run = never  # type: ignore[method-assign]
    elif mode == "hang-after-deliver":
        async def hang(field: str) -> None:
            await queue.client.rpush(f"handover-delivered:{queue_name}", field)
            await asyncio.Event().wait()
        worker.mover.between = hang
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
