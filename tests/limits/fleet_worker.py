"""A worker process for the fleet tests:
`python -m tests.limits.fleet_worker URL QUEUE [CONCURRENCY [LIMITER_USES_JSON]]`.
LIMITER_USES_JSON: [[name, tokens_in, tokens_out], ...] named limiters (declared by the test) that
every job goes through; jobs then also count in-flight in test:{lim:<name>}:inflight / :seen, and a
job with "usage": [in, out] reports that usage.

Handlers (job name → behaviour), all recording into test keys under the queue's hash tag:
  sleep  {"ms": n, "meet": k}              sleep n ms; track in-flight count per group; with `meet`,
                                           first wait (up to 20 s) until k jobs of its group run at once
  cost   {"ms": n, "report": units|null}   like sleep, then ctx.report_cost(units) when given
  http   {"url": u}                        GET u; a 429 becomes RateLimited via raise_for_rate_limit
  hang   {"ms": n}                         the first run of a job sleeps n ms, later runs return at once
In-flight counts are also kept per process (inflight:p:<pid>, seen:p:<pid>; the pids in `pids`).
Stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from typing import Any

import httpx

from conveyor import JobContext, Queue, Worker
from conveyor.limits import Estimate, LimiterUse
from conveyor.limits.http import raise_for_rate_limit
from conveyor.redis.connection import connect


def test_key(queue: str, name: str) -> str:
    return f"test:{{{queue}}}:{name}"


async def main(url: str, queue_name: str, concurrency: int, uses_json: str = "[]") -> None:
    uses = [LimiterUse(n, Estimate(i, o)) for n, i, o in json.loads(uses_json)]
    client = connect(url)
    queue = Queue(queue_name, redis=client)
    http = httpx.AsyncClient(timeout=10)

    async def track(ctx: JobContext, ms: float, meet: int = 0) -> None:
        group = ctx.group or "-"
        inflight = test_key(queue_name, f"inflight:{group}")
        total = test_key(queue_name, "inflight:*")
        mine = test_key(queue_name, f"inflight:p:{os.getpid()}")
        for use in uses:
            n_lim = await client.incr(f"test:{{lim:{use.name}}}:inflight")
            await client.rpush(f"test:{{lim:{use.name}}}:seen", n_lim)
        n_group, n_all, n_mine = await client.incr(inflight), await client.incr(total), await client.incr(mine)
        await client.rpush(test_key(queue_name, f"seen:{group}"), n_group)
        await client.rpush(test_key(queue_name, "seen:*"), n_all)
        await client.rpush(test_key(queue_name, f"seen:p:{os.getpid()}"), n_mine)
        try:
            if meet:  # hold on until `meet` jobs of the group run side by side (a busy machine is slow)
                async with asyncio.timeout(20):
                    while int(await client.get(inflight) or 0) < meet:  # noqa: ASYNC110 - the count is in Redis
                        await asyncio.sleep(0.01)
                await client.rpush(test_key(queue_name, f"met:{group}"), meet)
            await asyncio.sleep(ms / 1000)
        finally:
            for use in uses:
                await client.decr(f"test:{{lim:{use.name}}}:inflight")
            await client.decr(inflight)
            await client.decr(total)
            await client.decr(mine)

    async def sleep(ctx: JobContext, data: dict[str, Any]) -> None:
        try:
            await track(ctx, float(data.get("ms", 0)), int(data.get("meet", 0)))
        except TimeoutError:
            return  # never met: the test sees no "met" record
        if data.get("usage"):
            ctx.report_usage(int(data["usage"][0]), int(data["usage"][1]))

    async def cost(ctx: JobContext, data: dict[str, Any]) -> None:
        await track(ctx, float(data.get("ms", 0)))
        if data.get("report") is not None:
            ctx.report_cost(int(data["report"]))

    async def get(ctx: JobContext, data: dict[str, Any]) -> int:
        response = await http.get(data["url"], params={"job": ctx.job_id})
        raise_for_rate_limit(response)
        response.raise_for_status()
        return response.status_code

    async def hang(ctx: JobContext, data: dict[str, Any]) -> None:
        if await client.set(test_key(queue_name, f"hung:{ctx.job_id}"), "1", nx=True):
            await asyncio.sleep(float(data.get("ms", 0)) / 1000)

    worker = Worker(queue, {"sleep": sleep, "cost": cost, "http": get, "hang": hang}, concurrency=concurrency,
                    lease_ms=5000, idle_block_s=1.0, limiters=uses)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.close(2.0)))
    await client.rpush(test_key(queue_name, "workers"), worker.worker_id)
    await client.rpush(test_key(queue_name, "pids"), os.getpid())
    await worker.run()
    await http.aclose()
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10,
                     sys.argv[4] if len(sys.argv) > 4 else "[]"))
