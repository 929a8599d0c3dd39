"""Admin operations: listing, counts, promote, remove, drain, purge, obliterate, retention, on a plain
queue and on a partitioned one."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import (
    InvalidOptionError,
    InvalidStateError,
    JobContext,
    JobNotFoundError,
    JobState,
    Queue,
    QueueNotEmptyError,
    Retention,
)
from conveyor.partitions import PartitionedQueue, parts_of, worker_for
from conveyor.partitions.queue import MAX_PARTITIONED_LIST_CURSOR
from conveyor.queue import MAX_LIST_CURSOR
from tests.conftest import counts_of, running, wait_for

pytestmark = pytest.mark.behaviour  # each test runs on a plain and on a partitioned queue


async def test_paginated_listing(queue: Queue) -> None:
    jobs = await queue.add_bulk([{"name": "x", "data": i} for i in range(25)])
    seen: list[str] = []
    cursor: int | None = 0
    while cursor is not None:
        page = await queue.list_jobs("waiting", cursor=cursor, limit=10)
        seen += [r.id for r in page.jobs]
        cursor = page.next_cursor
    if isinstance(queue, PartitionedQueue):
        # Every job once; each partition's jobs in its claim order (docs/scaling.md, listing).
        assert sorted(seen) == sorted(j.id for j in jobs) and len(seen) == len(jobs)
        for part in queue.parts:
            mine = [j.id for j in jobs if j.queue is part]
            assert [i for i in seen if i in mine] == mine
    else:
        assert seen == [j.id for j in jobs]


async def test_listing_offsets_are_bounded(queue: Queue) -> None:
    """A plain queue takes cursors up to 10**9; a partitioned one up to 10,000, since each of its
    pages reads cursor + limit ids from every partition (docs/scaling.md)."""
    deepest = MAX_PARTITIONED_LIST_CURSOR if isinstance(queue, PartitionedQueue) else MAX_LIST_CURSOR
    await queue.add("x", 1)
    assert (await queue.list_jobs("waiting", cursor=deepest, limit=10)).jobs == []
    for cursor in (-1, deepest + 1, 10**23):
        with pytest.raises(InvalidOptionError, match="cursor"):
            await queue.list_jobs("completed", cursor=cursor, limit=10)


async def test_promote_delayed_job(queue: Queue) -> None:
    done: list[int] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        done.append(data)

    async with running(worker_for(queue, {"x": handler})):
        job = await queue.add("x", 7, delay=3600)
        await queue.promote(job.id)
        await job.wait(timeout=10)
        assert done == [7]
        with pytest.raises(InvalidStateError):
            await queue.promote(job.id)


async def test_remove_and_its_idempotency_key(queue: Queue) -> None:
    job = await queue.add("x", 1, idempotency_key="k1")
    await queue.remove(job.id)
    assert await queue.get_job(job.id) is None
    again = await queue.add("x", 2, idempotency_key="k1")  # the key went with the job
    assert again.id != job.id and again.created
    with pytest.raises(JobNotFoundError):
        await queue.remove(job.id)


async def test_active_job_cannot_be_removed(queue: Queue) -> None:
    import asyncio

    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> None:
        await gate.wait()

    async with running(worker_for(queue, {"x": handler})) as w:
        job = await queue.add("x")
        await wait_for(lambda: w.active == 1)
        with pytest.raises(InvalidStateError):
            await queue.remove(job.id)
        with pytest.raises(QueueNotEmptyError):
            await queue.obliterate()
        gate.set()
        await job.wait(timeout=10)


async def test_drain_purge_obliterate(queue: Queue) -> None:
    await queue.add_bulk([{"name": "x", "data": i} for i in range(1200)])
    await queue.add("x", delay=60)
    assert await queue.drain() == 1201
    assert sum((await counts_of(queue)).values()) == 0

    async def failing(ctx: JobContext, data: Any) -> None:
        raise ValueError("no")

    async with running(worker_for(queue, {"x": failing})):
        jobs = await queue.add_bulk([{"name": "x", "data": i} for i in range(5)])
        for j in jobs:
            await j.wait(timeout=10)
    assert (await counts_of(queue))["failed"] == 5
    assert await queue.purge("failed") == 5
    await queue.add("x", 1)
    await queue.obliterate()
    for part in parts_of(queue):  # a partitioned queue: every partition is gone
        assert await queue.client.exists(part.keys.meta, part.keys.events, part.keys.ready) == 0


async def test_retention_by_count(queue: Queue) -> None:
    await queue.set_retention(Retention(completed_max_count=10))

    async def ok(ctx: JobContext, data: Any) -> int:
        return data

    async with running(worker_for(queue, {"x": ok}, concurrency=5)):
        jobs = await queue.add_bulk([{"name": "x", "data": i} for i in range(40)])
        # Not jobs[-1].wait(): on a partitioned queue each partition keeps its share of the 10, so
        # the last job added may already be trimmed when the waiter reads it. Wait for all 40 to end.
        await wait_for(lambda: _all_ended(queue), timeout=60, what="all 40 jobs ended")
        await wait_for(lambda: _completed_at_most(queue, 10))
    remaining = (await queue.list_jobs(JobState.COMPLETED, limit=100)).jobs
    assert len(remaining) == 10
    assert await queue.get_job(jobs[0].id) is None


async def _all_ended(queue: Queue) -> bool:
    counts = await queue.counts()
    return counts[JobState.WAITING] == 0 and counts[JobState.ACTIVE] == 0 and counts[JobState.DELAYED] == 0


async def _completed_at_most(queue: Queue, n: int) -> bool:
    return (await queue.counts())[JobState.COMPLETED] <= n
