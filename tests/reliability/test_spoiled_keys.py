"""A job record edited by hand into another Redis type (a string, a list) where the hot path's scripts
expect a hash: it is no job, and it must neither lose the jobs beside it nor stand the worker or the
queue still."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, Queue, Worker
from tests.conftest import running
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
