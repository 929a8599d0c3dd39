"""Waiting on a job whose record is not kept once it ends (`result_ttl=0`): the waiter that saw the
job end says how it ended and that its record was not kept, instead of a bare "not found" that reads
as if the job never existed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobContext, JobNotFoundError, Queue, Worker
from conveyor.redis.connection import RedisClient
from tests.conftest import running, wait_for


async def _blocked_on_events(client: RedisClient) -> bool:
    """Some connection waits in a blocking XREAD (the waiter, between its looks at the record)."""
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in await client.client_list())


async def test_a_waiter_learns_the_job_completed_and_its_record_was_not_kept(
    plain_client: RedisClient, qname: str
) -> None:
    queue = Queue(qname, redis=plain_client)
    release = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> int:
        await release.wait()
        return 42

    job = await queue.add("h", result_ttl=0)
    async with running(Worker(queue, {"h": handler})):
        waiter = asyncio.create_task(job.result(timeout=60))
        await wait_for(lambda: _blocked_on_events(plain_client), what="the waiter waiting for events")
        release.set()
        with pytest.raises(JobNotFoundError) as info:
            await waiter
    assert info.value.ended == "completed"
    assert "completed" in str(info.value) and "not kept" in str(info.value)


async def test_a_job_that_never_existed_is_still_plainly_not_found(client: RedisClient, qname: str) -> None:
    queue = Queue(qname, redis=client)
    with pytest.raises(JobNotFoundError) as info:
        await queue.job("no-such-job").result(timeout=5)
    assert info.value.ended is None and "not found" in str(info.value)
