"""Processes for the keyed-job tests.

    python -m tests.llm.keyed_procs worker URL QUEUE CONCURRENCY
        runs `run` ({"ms": n}: sleep n ms) and `hang` (sleeps until cancelled); stops on SIGTERM.
    python -m tests.llm.keyed_procs produce URL QUEUE NAME MODE KEY WINDOW_S COUNT PAUSE_EVERY PAUSE_S
        adds COUNT jobs with the key through the synchronous client, pausing PAUSE_S after every
        PAUSE_EVERY adds (bursts of typing); prints one JSON line per add: [id, created].
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import connect
from conveyor.sync import SyncQueue


async def work(url: str, queue_name: str, concurrency: int) -> None:
    client = connect(url)
    queue = Queue(queue_name, redis=client)

    async def run(ctx: JobContext, data: dict[str, Any]) -> str:
        await asyncio.sleep(float(data.get("ms", 0)) / 1000)
        return ctx.job_id

    async def hang(ctx: JobContext, data: dict[str, Any]) -> None:
        await asyncio.sleep(3600)

    worker = Worker(queue, {"run": run, "hang": hang}, concurrency=concurrency, lease_ms=3000, idle_block_s=1.0)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.close(2.0)))
    await worker.run()
    await client.aclose()


def produce(url: str, queue: str, name: str, mode: str, key: str, window_s: float, count: int,
            pause_every: int, pause_s: float) -> None:
    options: dict[str, Any] = {"key": key, "key_mode": mode}
    if mode != "latest":
        options["key_window"] = window_s
    with SyncQueue(queue, redis=url) as q:
        for i in range(count):
            added = q.add(name, {"i": i, "ms": 20}, **options)
            print(json.dumps([added.id, added.created]), flush=True)
            if pause_every and (i + 1) % pause_every == 0:
                time.sleep(pause_s)  # the producer's own rhythm (a user typing), not a test wait


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        asyncio.run(work(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    else:
        a = sys.argv[2:]
        produce(a[0], a[1], a[2], a[3], a[4], float(a[5]), int(a[6]), int(a[7]), float(a[8]))
