"""A run whose lease was lost gives its named limiters' holds back: nothing is written for its outcome,
but the capacity it held must not stay taken while the worker lives."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.limits import Limiter, LimiterUse, SharedLimiter
from tests.conftest import running, wait_for


async def test_a_lost_lease_gives_its_concurrency_slot_back(sq: Queue) -> None:
    """Before, a run the worker stopped because the heartbeat said its lease was lost ended without
    a trip, so the gate never released its hold: the heartbeat went on extending it, and a
    concurrency-1 limiter admitted no other job of the queue while the worker lived. Now the hold
    is released when the run ends, and the next job runs."""
    name = "prov:" + sq.name
    limiter = Limiter(name, concurrency=1)
    started: list[Any] = []

    async def handler(ctx: JobContext, data: Any) -> Any:
        started.append(data)
        if data == "stuck":
            await asyncio.Event().wait()
        return data

    worker = Worker(sq, {"h": handler}, lease_ms=3000, heartbeat_ms=100, stalled_interval_ms=60_000,
                    limiters=[LimiterUse(name)], declare_limiters=[limiter])
    async with running(worker):
        stuck = await sq.add("h", "stuck")
        await wait_for(lambda: started == ["stuck"], what="the first job started")
        # Its lease went to someone else (it lapsed and the job was leased again elsewhere).
        await sq.client.hset(sq.keys.job(stuck.id), "token", "elsewhere")
        await wait_for(lambda: worker.stats.lost == 1, what="the worker saw the lease lost")
        after = await sq.add("h", "after")
        assert await after.result(timeout=30) == "after"
    lim = SharedLimiter(sq.client, name, sq.prefix)
    await sq.client.delete(*lim.keys.all)
