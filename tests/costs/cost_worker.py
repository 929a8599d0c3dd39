"""A worker process for the budget fleet tests: `python -m tests.costs.cost_worker URL QUEUE PREFIX
CONCURRENCY`. Handler `call` {"ms": n, "in": tokens, "out": tokens, "model": name} stands for a
provider call: it counts itself in test:{<queue>}:calls:<group> (the calls a provider would bill),
sleeps n ms and reports the usage. Cost accounting is on (Worker(costs=True)). Stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import connect


async def main(url: str, queue_name: str, prefix: str, concurrency: int) -> None:
    client = connect(url)
    queue = Queue(queue_name, redis=client, prefix=prefix)

    async def call(ctx: JobContext, data: dict[str, Any]) -> None:
        await client.incr(f"test:{{{queue_name}}}:calls:{ctx.group or '-'}")
        await asyncio.sleep(float(data.get("ms", 0)) / 1000)
        ctx.report_usage(int(data["in"]), int(data["out"]), model=data.get("model"))

    worker = Worker(queue, {"call": call}, concurrency=concurrency, lease_ms=5000, idle_block_s=1.0, costs=True)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.close(2.0)))
    await worker.run()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
