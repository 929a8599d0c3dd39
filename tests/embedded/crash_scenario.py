"""The process killed with -9 in the durability test: it holds the embedded server, has two jobs
active (their handler never returns), three waiting behind them and two delayed, then waits to die.

Prints one JSON line with the job ids and the server pid once that state is reached.
Usage: python crash_scenario.py QUEUE
"""

from __future__ import annotations

import asyncio
import json
import sys

from conveyor import JobState, Queue, Worker
from conveyor.embedded import resolve_redis_url
from conveyor.settings import Settings

LEASE_MS = 1500


async def hang(ctx: object, data: object) -> None:
    await asyncio.Event().wait()


async def main(qname: str) -> None:
    url, handle = resolve_redis_url(Settings.from_env())
    assert handle is not None
    queue = Queue(qname, redis=url)
    active = [(await queue.add("slow", {"n": i})).id for i in range(2)]
    worker = Worker(queue, {"slow": hang}, concurrency=2, lease_ms=LEASE_MS)
    await worker.start()
    while (await queue.counts()).get(JobState.ACTIVE, 0) < 2:  # noqa: ASYNC110 - state lives in Redis
        await asyncio.sleep(0.01)
    waiting = [(await queue.add("quick", {"n": i})).id for i in range(3)]
    delayed = [(await queue.add("quick", {"n": 10 + i}, delay=3.0)).id for i in range(2)]
    print(json.dumps({"active": active, "waiting": waiting, "delayed": delayed, "server_pid": handle.pid}),
          flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
