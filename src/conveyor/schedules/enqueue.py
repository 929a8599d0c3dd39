"""Turning ticks into jobs on the target queue, each tick at most once.

A tick's job id is derived from the schedule and the tick, and the add runs inside a guard that
remembers the last tick enqueued per schedule in the queue's own slot (schedules/lua/add-tick-6.lua)
and refuses a batch that starts at or before it. So re-enqueueing after a crash between enqueue and
advance never makes a second job, even when the first one already ran and its record was deleted
(result_ttl=0, retention, purge), and even when the new pass also fires ticks that came due since.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from conveyor import codec
from conveyor.errors import IdempotencyConflictError
from conveyor.options import DEFAULT_IDEMPOTENCY_TTL_S, JobOptions, JobSpec
from conveyor.partitions import PartitionedQueue, read_layout, route_partition
from conveyor.partitions.layout import queue_of_layout
from conveyor.queue import Queue
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import validate_queue_name
from conveyor.schedules.model import Schedule
from conveyor.schedules.scripts import add_tick_jobs

logger = logging.getLogger(__name__)
Layout = tuple[int, tuple[int, ...]] | None  # a queue's partition layout as read_layout returns it


class QueueCache:
    """One `Queue` handle per target queue, sharing the scheduler's client."""

    def __init__(self, client: RedisClient, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._queues: dict[str, tuple[Layout, Queue]] = {}

    async def get(self, name: str) -> Queue:
        """The queue as Redis records it now (a partitioned queue over its partitions). The layout
        record is read at each call (one small read per enqueue), so ticks follow a re-partition
        without a restart; the handle is kept while the layout stays. Read once, a scheduler kept
        adding ticks to the layout it first saw, whose partitions no worker serves once retired."""
        layout = await read_layout(self.client, self.prefix, validate_queue_name(name))
        cached = self._queues.get(name)
        if cached is not None and cached[0] == layout:
            return cached[1]
        q = queue_of_layout(name, layout, redis=self.client, prefix=self.prefix)
        self._queues[name] = (layout, q)
        return q


def _spec(schedule: Schedule, job_id: str) -> JobSpec:
    return JobSpec(schedule.task, schedule.data, JobOptions.from_mapping({**schedule.options, "job_id": job_id}))


async def enqueue(queue: Queue, schedule: Schedule, job_ids: Sequence[str]) -> int:
    """Add one job per id (a run outside the ticks, e.g. run-now); ids that exist are left alone.
    Returns how many were created."""
    if not job_ids:
        return 0
    specs = [_spec(schedule, job_id) for job_id in job_ids]
    try:
        jobs = await queue.add_specs(specs)
    except IdempotencyConflictError:
        # A job exists with older data (the schedule was edited meanwhile): keep it, add the rest.
        created = 0
        for spec in specs:
            try:
                created += (await queue.add_specs([spec]))[0].created
            except IdempotencyConflictError as exc:
                logger.info("schedule %s: job %s exists with other data; kept", schedule.id, exc.job_id)
        return created
    return sum(1 for j in jobs if j.created)


def run_now_key(schedule_id: str, idempotency_key: str) -> str:
    """The job's idempotency key of a run-now sent with `idempotency_key`: namespaced by the
    schedule (the same header on another schedule is another run) and hashed, so any header value
    fits the 200 characters of a key."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return f"run-now:{schedule_id}:{digest}"


def _run_body(schedule: Schedule) -> str:
    """What a resend of a run-now must repeat: the schedule's task and data (a digest)."""
    return hashlib.sha256(codec.dumps([schedule.task, schedule.data])).hexdigest()[:32]


async def enqueue_run_now(
    queue: Queue, schedule: Schedule, job_id: str, idempotency_key: str, *, client: RedisClient, marker: str
) -> str:
    """Add a run-now's job under an idempotency key: a resend within the key's life (the job's
    idempotency_ttl, one day by default) returns the first run's id and adds nothing. The job's own
    idempotency key goes with its record, which retention may delete long before (result_ttl=0, a
    purge), so the first run is also remembered under `marker` (`client`'s `{schedules}` slot) for
    the key's life; a resend finding it adds nothing, even with the job gone. Raises
    IdempotencyConflictError when the schedule's task or data changed in between."""
    body = _run_body(schedule)
    first = _first_run(await redis_call(client.get(marker)))
    if first is not None:
        if first[1] != body:
            raise IdempotencyConflictError(first[0], "task or data")
        return first[0]
    options = {**schedule.options, "job_id": job_id, "idempotency_key": run_now_key(schedule.id, idempotency_key)}
    (job,) = await queue.add_specs([JobSpec(schedule.task, schedule.data, JobOptions.from_mapping(options))])
    ttl_ms = int(float(schedule.options.get("idempotency_ttl") or DEFAULT_IDEMPOTENCY_TTL_S) * 1000)
    remembered = codec.dumps({"job_id": job.id, "body": body}).decode()
    await redis_call(client.set(marker, remembered, px=max(1, ttl_ms), nx=True))  # a concurrent first: same id
    return job.id


def _first_run(raw: str | None) -> tuple[str, str] | None:
    """(job id, body digest) of a remembered run-now; None for none, or one edited into nonsense."""
    try:
        value = codec.loads(raw) if raw is not None else None
    except ValueError:
        return None
    if isinstance(value, dict) and isinstance(value.get("job_id"), str) and isinstance(value.get("body"), str):
        return value["job_id"], value["body"]
    return None


async def enqueue_ticks(queue: Queue, schedule: Schedule, ticks: Sequence[int]) -> int:
    """Add the job of each tick (oldest first) unless that tick was enqueued before. Returns how many
    jobs were created."""
    if not ticks:
        return 0
    await queue.register()
    if isinstance(queue, PartitionedQueue):  # a schedule's ticks and their marker: one partition
        queue = queue.parts[route_partition(schedule.id, queue.partition_count)]
    key = queue.keys.schedule_ticks
    while True:
        encoded = [queue.encode(_spec(schedule, schedule.job_id(t))) for t in ticks]
        reply = await add_tick_jobs(
            queue.scripts, encoded, key, schedule.id, ticks[0], ticks[-1], mark_on_conflict=False
        )
        if reply is not None:
            break
        # Some of these ticks were enqueued before (a pass that crashed before advancing): keep only
        # the ticks after the recorded one. The record only grows, so this ends.
        recorded = await queue.client.hget(key, schedule.id)
        ticks = [t for t in ticks if recorded is None or t > int(recorded)]
        if not ticks:
            return 0
    if reply[0] != ScriptCode.CONFLICT:
        return sum(1 for i in range(1, len(reply), 2) if reply[i] == 1)
    # A tick's job exists with older data (the schedule was edited meanwhile): keep it, add the rest.
    created = 0
    for tick, job in zip(ticks, encoded, strict=True):
        one = await add_tick_jobs(queue.scripts, [job], key, schedule.id, tick, tick, mark_on_conflict=True)
        if one is None:
            continue
        if one[0] == ScriptCode.CONFLICT:
            logger.info("schedule %s: job %s exists with other data; kept", schedule.id, one[1])
        else:
            created += int(one[1] == 1)
    return created
