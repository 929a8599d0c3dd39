"""Parked claims: an idle worker sends its next claim ahead, pipelined behind a BLPOP on the queue's
wake list, so Redis runs it the moment a job arrives (docs/internals.md, "Parked claims")."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import JobContext, JobState, Queue, Worker
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.conftest import running, wait_for
from tests.proxy import TcpProxy


async def test_an_idle_worker_picks_jobs_up_through_its_parked_claim(direct: Queue) -> None:
    runs: list[int] = []

    async def handler(ctx: JobContext, data: int) -> int:
        runs.append(data)
        return data

    worker = Worker(direct, {"j": handler}, idle_block_s=60)
    async with running(worker):
        for i in range(3):
            await wait_for(lambda: worker.pump.parked is not None, what="the idle worker's claim parked")
            job = await direct.add("j", i)
            assert (await job.wait(timeout=30)).state is JobState.COMPLETED
        assert worker.wake_hub.waits == 0, "no wake-up wait: the parked claims took every job"
    assert runs == [0, 1, 2]


async def test_closing_an_idle_worker_ends_its_parked_claim_at_once(qname: str) -> None:
    """close() does not wait for the park's BLPOP to time out: it ends it with a marker of its own
    (a server of its own, so that the count of LPUSH calls is the worker's alone)."""
    server = await asyncio.to_thread(RedisServer().start)
    queue = Queue(qname, redis=connect(server.url))
    worker = Worker(queue, {"j": lambda ctx, data: None})  # type: ignore[arg-type]
    try:
        await worker.start()
        await wait_for(lambda: worker.pump.parked is not None, what="the idle worker's claim parked")
        pushes = await _calls(queue, "lpush")
        await asyncio.wait_for(worker.close(), 30)
        assert worker.pump.parked is None
        assert await _calls(queue, "lpush") == pushes + 1, "close pushed the park's own marker"
        assert await queue.client.zcard(queue.keys.active) == 0
    finally:
        await queue.client.aclose()
        await asyncio.to_thread(server.close)


async def _calls(queue: Queue, command: str) -> int:
    stats = await queue.client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_parked_claim_whose_reply_is_lost_is_answered_again(
    direct: Queue, proxied: Queue, proxy: TcpProxy
) -> None:
    """The job arrives, the parked claim leases it, and its reply is lost with the connection: the
    same trip sent again is answered from its record, so the job runs once with no stall or lapse."""
    runs: list[Any] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        runs.append(data)

    # A long lease and no sweep: an orphaned lease would keep the job active for the whole test.
    worker = Worker(proxied, {"j": handler}, lease_ms=60_000, stalled_interval_ms=600_000, idle_block_s=60)
    proxy.lose_reply(b"BLPOP", nth=(1,))  # the first parked claim: it runs, its reply is lost
    async with running(worker):
        await wait_for(lambda: proxy._seen >= 1, what="the parked claim sent")
        job = await direct.add("j", "once")
        assert (await job.wait(timeout=30)).state is JobState.COMPLETED
    assert proxy.cuts == 1 and worker.pump_failures >= 1
    assert runs == ["once"]
    rec = await job.record()
    assert (rec.attempts_made, rec.stalls, rec.lapses) == (1, 0, 0), rec
    assert worker.stats.lost == 0
