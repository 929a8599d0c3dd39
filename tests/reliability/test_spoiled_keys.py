"""A job record edited by hand into another Redis type (a string, a list) where the hot path's scripts
expect a hash: it is no job, and it must neither lose the jobs beside it nor stand the worker or the
queue still."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, Queue, Worker
from tests.conftest import running, wait_for
from tests.reliability.helpers import FAST, loops_alive


async def _ok(ctx: JobContext, data: Any) -> Any:
    return data


async def _spoil(queue: Queue, job_id: str) -> None:
    """Replace the job's record (a hash) with a string."""
    await queue.client.delete(queue.keys.job(job_id))
    await queue.client.set(queue.keys.job(job_id), "not a hash")


async def test_a_spoiled_ready_record_loses_none_of_the_jobs_claimed_with_it(queue: Queue) -> None:
    """Before, the claim popped a batch of ids from `ready` and failed at the spoiled record's read:
    the jobs popped with it were in no set any more (lost), one of them marked active under a lease
    no sweep could see, and the worker's pump crashed on the error. Now the spoiled id is dropped,
    as a missing record's is, and the others run."""
    await queue.pause()
    jobs = [await queue.add("ok", n) for n in range(5)]
    await _spoil(queue, jobs[2].id)
    await queue.resume()
    worker = Worker(queue, {"ok": _ok}, concurrency=10, batch_size=10, **FAST)
    async with running(worker):
        for job in jobs[:2] + jobs[3:]:
            assert await job.result(timeout=30) == (await job.record()).data
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_a_spoiled_due_record_never_stops_the_claims_of_the_queue(queue: Queue) -> None:
    """Before, a claim that promoted due delayed jobs failed at the spoiled record, whole, and the
    next one did again (the id stayed due): no worker of the queue leased anything any more, and
    each worker's pump crashed on every trip. Now its id only leaves `delayed`."""
    jobs = [await queue.add("ok", n, delay=0.2) for n in range(5)]
    await _spoil(queue, jobs[2].id)
    worker = Worker(queue, {"ok": _ok}, concurrency=10, batch_size=10, **FAST)
    async with running(worker):
        for job in jobs[:2] + jobs[3:]:
            assert await job.result(timeout=30) == (await job.record()).data
        assert await queue.client.zscore(queue.keys.delayed, jobs[2].id) is None
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_a_spoiled_held_record_never_stops_the_claims_of_the_queue(queue: Queue) -> None:
    """Before, a claim that took held jobs back to ready (a worker with their handler came) failed
    at the spoiled record, whole, every time: that worker leased nothing and its pump crashed on
    every trip. Now its id only leaves the hold."""
    holder = Worker(queue, {"other": _ok}, **FAST)
    async with running(holder):
        jobs = [await queue.add("ok", n) for n in range(3)]
        await wait_for(lambda: holder.stats.held == 3, what="every job held")
    await _spoil(queue, jobs[1].id)
    worker = Worker(queue, {"ok": _ok}, **FAST)
    async with running(worker):
        for job in (jobs[0], jobs[2]):
            assert await job.result(timeout=30) == (await job.record()).data
        assert loops_alive(worker)
    assert worker.loop_restarts == 0
    assert await queue.held() == {}
