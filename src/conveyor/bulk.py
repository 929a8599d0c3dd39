"""Bulk admin actions shared by the HTTP API and the CLI, each in bounded batches so Redis is never
blocked: retry every failed job, delete every job of one state."""

from __future__ import annotations

import asyncio

from conveyor.errors import InvalidOptionError, InvalidStateError, JobNotFoundError
from conveyor.job import JobState
from conveyor.partitions.queue import PartitionedQueue
from conveyor.partitions.reading import parts_of
from conveyor.queue import Queue

RETRY_BATCH = 100
DELETE_BATCH = 500


async def _retry_one(queue: Queue, part: Queue, job_id: str) -> bool:
    """Retry one job of `part`; a partitioned queue moves a job of a previous layout to the current
    one (PartitionedQueue.retry_in), where a worker runs it."""
    try:
        if isinstance(queue, PartitionedQueue):
            await queue.retry_in(part, job_id)
        else:
            await part.retry(job_id)
    except (InvalidStateError, JobNotFoundError):
        return False  # changed under us (retried or purged by someone else)
    return True


async def retry_failed(queue: Queue, limit: int = 10_000) -> tuple[int, int]:
    """Send up to `limit` failed jobs (oldest first; a partitioned queue: partition by partition,
    oldest first in each) back to waiting; returns (retried, still failed)."""
    retried = 0
    for part in parts_of(queue):
        while retried < limit:
            batch = min(RETRY_BATCH, limit - retried)
            ids = [str(i) for i in await part.client.zrange(part.keys.failed, 0, batch - 1)]
            if not ids:
                break
            done = sum(await asyncio.gather(*(_retry_one(queue, part, i) for i in ids)))
            retried += done
            if done == 0:
                break
    return retried, sum([int(await part.client.zcard(part.keys.failed)) for part in parts_of(queue)])


async def delete_state(queue: Queue, state: JobState | str) -> int:
    """Delete every job of one state; active jobs are refused (cancel them first)."""
    state = JobState(state)
    if state is JobState.ACTIVE:
        raise InvalidOptionError("active jobs cannot be deleted: cancel them first")
    if state is JobState.WAITING:
        return await queue.drain(include_delayed=False)
    if state is JobState.DELAYED:
        total = 0
        for part in parts_of(queue):  # a partitioned queue: every partition's delayed set
            while True:
                deleted, remaining = await part.scripts.delete_jobs(part.keys.delayed, DELETE_BATCH, "drained")
                total += deleted
                if remaining == 0 or deleted == 0:
                    break
        return total
    return await queue.purge(state)
