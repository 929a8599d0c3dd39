"""Retention of completed records by bytes (docs/reliability.md, "Retention"): a record kept without
a result TTL counts its payload + result + 400 bytes against `completed_max_bytes`; the oldest go
first; removing or purging records gives their bytes back; records with a TTL are not counted."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobOptions, JobState, Queue, Retention, Worker
from conveyor.queue import DEFAULT_COMPLETED_MAX_BYTES
from tests.conftest import running, wait_for

PAYLOAD = "x" * 998   # 1,000 bytes as JSON
RESULT = "y" * 1998   # 2,000 bytes as JSON
SIZE = 1000 + 2000 + 400


async def big(ctx: JobContext, data: Any) -> str:
    return RESULT


async def run_all(queue: Queue, n: int, options: JobOptions | None = None) -> list[str]:
    jobs = await queue.add_bulk([{"name": "big", "data": PAYLOAD, "options": options or JobOptions()}
                                 for _ in range(n)])
    async with running(Worker(queue, {"big": big}, concurrency=1)):
        await wait_for(lambda: settled(queue), what="every job finished")
    return [j.id for j in jobs]


async def settled(queue: Queue) -> bool:
    counts = await queue.counts()
    return counts[JobState.WAITING] == 0 and counts[JobState.ACTIVE] == 0


async def test_default_bound_is_set() -> None:
    assert Retention().completed_max_bytes == DEFAULT_COMPLETED_MAX_BYTES == 128 * 1024 * 1024


async def test_oldest_records_go_once_the_bytes_bound_is_passed(queue: Queue) -> None:
    await queue.set_retention(Retention(completed_max_bytes=3 * SIZE + 100))
    ids = await run_all(queue, 8)
    await wait_for(lambda: completed_ids(queue, ids[-3:]), what="only the three newest records kept")
    assert await queue.completed_bytes() == 3 * SIZE
    assert [await queue.get_job(i) for i in ids[:5]] == [None] * 5


async def completed_ids(queue: Queue, expected: list[str]) -> bool:
    kept = [r.id for r in (await queue.list_jobs(JobState.COMPLETED, limit=100)).jobs]
    return sorted(kept) == sorted(expected)


async def test_removing_and_purging_give_bytes_back(queue: Queue) -> None:
    ids = await run_all(queue, 3)
    assert await queue.completed_bytes() == 3 * SIZE
    await queue.remove(ids[0])
    assert await queue.completed_bytes() == 2 * SIZE
    await queue.purge(JobState.COMPLETED)
    assert await queue.completed_bytes() == 0


async def test_records_with_a_ttl_are_not_counted(queue: Queue) -> None:
    await queue.set_retention(Retention(completed_max_bytes=SIZE))
    ids = await run_all(queue, 3, JobOptions(result_ttl=600))
    assert await queue.completed_bytes() == 0
    assert None not in [await queue.get_job(i) for i in ids]  # bounded by their TTL instead


async def test_no_bytes_bound_keeps_every_record(queue: Queue) -> None:
    await queue.set_retention(Retention(completed_max_bytes=None))
    await queue.client.hset(queue.keys.meta, "completed_bytes", 10**12)  # even a drifted total
    ids = await run_all(queue, 4)
    assert None not in [await queue.get_job(i) for i in ids]


async def test_a_drifted_total_is_reset_once_every_record_is_gone(queue: Queue) -> None:
    await queue.set_retention(Retention(completed_max_bytes=2 * SIZE))
    await queue.client.hset(queue.keys.meta, "completed_bytes", 10**9)  # records deleted by hand
    ids = await run_all(queue, 2)
    # The first record went at once (the total said far more than the bound) and with it the whole
    # set, so the total restarted from zero; the second record is kept and counted alone.
    assert await queue.completed_bytes() == SIZE
    assert [r.id for r in (await queue.list_jobs(JobState.COMPLETED, limit=100)).jobs] == [ids[1]]
