"""A manual retry keeps a failed job's log and streamed output for its next run: they lose the expiry
that `failed_ttl` gave them, as the record does, so the new run's lines are not cut off when it
lapses (one run's log continues into the next)."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobFailedError, Queue, Unrecoverable, Worker
from conveyor.redis.connection import RedisClient
from tests.conftest import running


async def test_a_retried_job_keeps_its_log_and_output_past_the_failed_ttl(client: RedisClient, qname: str) -> None:
    queue = Queue(qname, redis=client)
    fail = True

    async def handler(ctx: JobContext, data: Any) -> str:
        await ctx.log(f"attempt {ctx.attempt}")
        await ctx.stream(f"chunk {ctx.attempt}")
        if fail:
            raise Unrecoverable("first run fails")
        return "ok"

    job = await queue.add("h", failed_ttl=3600)
    async with running(Worker(queue, {"h": handler})):
        try:
            await job.result(timeout=30)
        except JobFailedError:
            pass
        else:
            raise AssertionError("the first run was to fail")
    log_key, out_key = queue.keys.log(job.id), queue.keys.output(job.id)
    assert await client.pttl(log_key) > 0 and await client.pttl(out_key) > 0  # failed_ttl reached them
    fail = False
    await queue.retry(job.id)
    # Waiting again: nothing of the job expires any more (record, log, output).
    assert await client.pttl(queue.keys.job(job.id)) == -1
    assert await client.pttl(log_key) == -1
    assert await client.pttl(out_key) == -1
    async with running(Worker(queue, {"h": handler})):
        assert await job.result(timeout=30) == "ok"
    assert await job.logs() == ["attempt 1", "attempt 1"]  # a retry starts the attempts afresh
