"""Turning ticks into jobs on the target queue (idempotent on the tick's job id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from conveyor.errors import IdempotencyConflictError
from conveyor.options import JobOptions, JobSpec
from conveyor.queue import Queue
from conveyor.redis.connection import RedisClient
from conveyor.schedules.model import Schedule

logger = logging.getLogger(__name__)


class QueueCache:
    """One `Queue` handle per target queue, sharing the scheduler's client."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._queues: dict[str, Queue] = {}

    def get(self, name: str) -> Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = Queue(name, redis=self.client, prefix=self.prefix)
        return q


async def enqueue(queue: Queue, schedule: Schedule, job_ids: Sequence[str]) -> int:
    """Add one job per id; ids that exist already are left alone. Returns how many were created."""
    if not job_ids:
        return 0
    specs = [
        JobSpec(schedule.task, schedule.data, JobOptions.from_mapping({**schedule.options, "job_id": job_id}))
        for job_id in job_ids
    ]
    try:
        jobs = await queue.add_specs(specs)
    except IdempotencyConflictError:
        # A tick's job exists with older data (the schedule was edited meanwhile): keep it, add the rest.
        created = 0
        for spec in specs:
            try:
                created += (await queue.add_specs([spec]))[0].created
            except IdempotencyConflictError as exc:
                logger.info("schedule %s: job %s exists with other data; kept", schedule.id, exc.job_id)
        return created
    return sum(1 for j in jobs if j.created)
