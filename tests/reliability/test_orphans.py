"""An id in `active` whose job record is gone (deleted while leased) leaves the set after a bounded
number of sweeps and is counted once; it is not looked at again every minute for ever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.redis.scripts import ORPHAN_LOOKS
from tests.conftest import running, wait_for

FROZEN = {"lease_ms": 200, "heartbeat_ms": 60_000, "stalled_interval_ms": 60_000, "concurrency": 1}


@asynccontextmanager
async def orphan(queue: Queue) -> AsyncIterator[str]:
    """A job leased by a frozen worker whose record was deleted under the lease, the lease expired."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> None:
        started.set()
        await release.wait()

    async with running(Worker(queue, {"j": handler}, worker_id="frozen", **FROZEN), grace_s=5):
        job = await queue.add("j")
        await asyncio.wait_for(started.wait(), 30)
        await queue.client.delete(queue.keys.job(job.id))

        async def expired() -> bool:
            secs, micros = await queue.client.time()
            score = await queue.client.zscore(queue.keys.active, job.id)
            return score is not None and score < secs * 1000 + micros // 1000

        await wait_for(expired, what="the frozen lease expired")
        try:
            yield job.id
        finally:
            release.set()


async def _next_minute(queue: Queue, job_id: str) -> None:
    """Bring the id's next look forward a minute and more, keeping the looks counted in its score."""
    score = await queue.client.zscore(queue.keys.active, job_id)
    assert score is not None
    await queue.client.zadd(queue.keys.active, {job_id: score - 3_600_000})


async def test_orphan_id_leaves_active_once(queue: Queue) -> None:
    async with orphan(queue) as job_id:
        for _ in range(ORPHAN_LOOKS - 1):  # the record may be in transit (a slot migration): kept
            sweep = await queue.scripts.sweep(1, 10)
            assert sweep.orphans == 0
            assert await queue.client.zscore(queue.keys.active, job_id) is not None
            await _next_minute(queue, job_id)
        sweep = await queue.scripts.sweep(1, 10)
        assert sweep.orphans == 1
        assert await queue.client.zcard(queue.keys.active) == 0
        assert (await queue.scripts.sweep(1, 10)).orphans == 0  # counted once


async def test_worker_logs_the_orphan_once(queue: Queue, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.worker.worker")
    async with orphan(queue) as job_id:
        for _ in range(ORPHAN_LOOKS - 1):
            await queue.scripts.sweep(1, 10)
            await _next_minute(queue, job_id)
        sweeper = Worker(queue, {"other": lambda ctx, data: None}, stalled_interval_ms=20)
        async with running(sweeper):
            await wait_for(lambda: "whose job record was gone" in caplog.text, what="the orphan logged")
        assert caplog.text.count("whose job record was gone") == 1
        assert await queue.client.zcard(queue.keys.active) == 0


async def test_an_outcome_for_a_deleted_record_takes_its_id_out_of_active(queue: Queue) -> None:
    """The worker that ran a job whose record was deleted under its lease reports the outcome: its
    id leaves `active` then; before, it stayed there for the sweep (which looked again every minute)."""
    started = asyncio.Event()
    release = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> str:
        started.set()
        await release.wait()
        return "done"

    worker = Worker(queue, {"j": handler}, lease_ms=30_000, stalled_interval_ms=60_000)
    async with running(worker):
        job = await queue.add("j")
        await asyncio.wait_for(started.wait(), 30)
        assert await queue.client.zscore(queue.keys.active, job.id) is not None
        await queue.client.delete(queue.keys.job(job.id))
        release.set()
        await wait_for(lambda: worker.stats.processed >= 1 and not worker.leases, what="the outcome was sent")

        async def id_gone() -> bool:
            return await queue.client.zscore(queue.keys.active, job.id) is None

        await wait_for(id_gone, what="the id left active")
