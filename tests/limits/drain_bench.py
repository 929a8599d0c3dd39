"""Quick drain benchmark (not a test): N no-op jobs, one Worker, concurrency 100.

    python tests/limits/drain_bench.py [--jobs 20000] [--mode plain|limits|groups]

Prints jobs/s for draining a pre-filled queue; `limits` sets a generous queue rate/concurrency
limit, `groups` spreads the jobs over 50 groups. Used to show what limits cost on the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from conveyor import JobOptions, JobSpec, Queue, Worker
from conveyor.testing import RedisServer


async def noop(ctx: object, data: object) -> None:
    return None


async def server_cost(q: Queue) -> tuple[int, int]:
    """Server CPU spent in scripts (microseconds) and commands run so far, from the command stats."""
    stats = await q.client.info("commandstats")
    usec = sum(int(v["usec"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    calls = sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_eval"))
    return usec, calls


async def main(jobs: int, mode: str, url: str) -> tuple[float, float, float]:
    q = Queue(f"bench-{uuid.uuid4().hex[:6]}", redis=url)
    if mode == "limits":
        from conveyor.limits import RateLimit

        await q.set_limits(rate=RateLimit(1_000_000, per_s=1, burst=1000), concurrency=1000)  # type: ignore[attr-defined]
    specs = [
        JobSpec("noop", i, JobOptions(group=f"g{i % 50}") if mode == "groups" else JobOptions())
        for i in range(jobs)
    ]
    await q.add_bulk(specs)
    worker = Worker(q, {"noop": noop}, concurrency=100)
    usec, calls = await server_cost(q)
    started = time.perf_counter()
    await worker.start()
    deadline = started + 300
    while worker.stats.processed < jobs and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    usec2, calls2 = await server_cost(q)
    await worker.close()
    await q.obliterate(force=True)
    await q.close()
    return jobs / elapsed, (usec2 - usec) / jobs, (calls2 - calls) / jobs


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--mode", default="plain")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    with RedisServer() as server:
        results = [asyncio.run(main(a.jobs, a.mode, server.url)) for _ in range(a.runs)]
    rates = sorted(r for r, _, _ in results)
    usecs = sorted(u for _, u, _ in results)
    calls = sorted(c for _, _, c in results)
    print(f"{a.mode}: " + ", ".join(f"{r:,.0f}" for r in rates) + f" jobs/s (median {rates[len(rates) // 2]:,.0f},"
          f" best {rates[-1]:,.0f}); Redis script CPU {usecs[len(usecs) // 2]:.1f} us/job,"
          f" {calls[len(calls) // 2]:.2f} commands/job (medians)")
