"""Rolling deploys: a worker never fails a job only because it lacks the handler. The job waits,
visibly, for a worker that has one, and fails with a NoHandler error only after the no-handler
timeout passed with no such worker."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobFailedError, JobState, Queue, Worker
from tests.conftest import running, wait_for


async def old(ctx: JobContext, data: Any) -> str:
    return "old"


async def new(ctx: JobContext, data: Any) -> str:
    return "new"


async def test_a_job_waits_for_a_worker_with_its_handler(queue: Queue) -> None:
    old_worker = Worker(queue, {"a": old}, worker_id="old", idle_block_s=0.2)
    async with running(old_worker):
        job = await queue.add("b", attempts=1)
        await wait_for(lambda: old_worker.stats.held >= 1, what="the old worker handed the job on")
        await wait_for(lambda: _waiting(queue, job.id), what="held in Redis")  # recorded by its next trip
        rec = await job.record()
        assert rec.state is JobState.WAITING and rec.awaiting_handler and rec.attempts_made == 0
        assert await queue.held() == {"b": 1}
        assert (await queue.counts())[JobState.WAITING] == 1
        held = [e for e in await queue.read_events("0-0") if e.type == "held"]
        assert held and held[0].fields["name"] == "b"
        # The new version rolls out next to the old one.
        new_worker = Worker(queue, {"a": old, "b": new}, worker_id="new", idle_block_s=0.2)
        async with running(new_worker):
            assert await job.result(timeout=20) == "new"
            a_job = await queue.add("a")
            assert await a_job.result(timeout=20) == "old"
    rec = await job.record()
    assert rec.attempts_made == 1 and rec.worker == "new" and not rec.awaiting_handler
    assert await queue.held() == {}


async def test_a_job_fails_clearly_when_no_worker_has_its_handler_in_time(queue: Queue) -> None:
    worker = Worker(queue, {"a": old}, no_handler_timeout_s=0.3, stalled_interval_ms=100)
    async with running(worker):
        job = await queue.add("nobody-handles-this")
        try:
            await job.result(timeout=20)
        except JobFailedError as exc:
            assert exc.error["type"] == "NoHandler"
            assert "nobody-handles-this" in exc.error["message"]
        else:
            raise AssertionError("the job should have failed")
    assert await queue.held() == {}
    assert (await queue.counts())[JobState.WAITING] == 0


async def test_cancelling_a_held_job(queue: Queue) -> None:
    worker = Worker(queue, {"a": old})
    async with running(worker):
        job = await queue.add("b")
        await wait_for(lambda: worker.stats.held >= 1, what="held")
        # The worker counts the hold before its trip records it: wait until the job waits, held.
        await wait_for(lambda: _waiting(queue, job.id), what="held in Redis")
        assert await queue.cancel(job.id) is JobState.CANCELLED
    assert await queue.held() == {}
    assert (await queue.counts())[JobState.WAITING] == 0


async def _waiting(queue: Queue, job_id: str) -> bool:
    return await queue.get_state(job_id) is JobState.WAITING
