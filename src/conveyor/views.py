"""JSON views of jobs, events, queues and workers: the one place their field names are decided.

The HTTP API (`conveyor.api`), the dashboard and the operator's CLI (`conveyor status|queues|jobs|job
--json`) all print these, so a field is named the same everywhere. Engine-only: no optional extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from conveyor import codec
from conveyor.errors import ConnectionFailedError
from conveyor.events import Event
from conveyor.job import JobRecord, JobState
from conveyor.limits.admin import grouped_waiting, known_groups
from conveyor.partitions.reading import parts_of
from conveyor.queue import Queue
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import QueueKeys, WorkerRegistryKeys, registry_key, validate_queue_name

THROUGHPUT_WINDOW_S = 60
TRACE_FIELDS = frozenset({"stack", "traceback"})
DATA_EVENT_FIELDS = frozenset({"line", "chunk"})  # event fields that are job data: log lines, streamed output
# Priority bands whose heads are read to find the oldest waiting job (bounded work per queue).
MAX_BANDS_SCANNED = 16
MAX_GROUPS_SCANNED = 100
_BAND = 2**41  # ready-set score = (1000 - priority) * 2^41 + arrival sequence (lua/includes/common.lua)


def job_view(
    rec: JobRecord, *, show_data: bool = True, show_trace: bool = True, due_ms: int | None = None
) -> dict[str, Any]:
    """A job record; `show_data=False` withholds payload and result (`data_hidden` says so),
    `show_trace=False` the error's stack trace (server paths and code: the API shows it to admin keys only).
    `due_ms`: when a delayed job becomes ready; it is also `next_attempt_ms` when the job has run
    before (a retry waiting out its backoff, or a run handed back for later)."""
    out = rec.to_dict()
    out["due_ms"] = due_ms
    out["next_attempt_ms"] = due_ms if due_ms is not None and rec.started_ms is not None else None
    out["data_hidden"] = not show_data
    if not show_data:
        out["data"] = None
        out["result"] = None
    if not show_trace and isinstance(out.get("error"), dict):
        out["error"] = {k: v for k, v in out["error"].items() if k not in TRACE_FIELDS}
    return out


async def due_times(queue: Queue, records: Iterable[JobRecord]) -> dict[str, int]:
    """When each delayed record becomes ready (its score in the delayed set), in one round trip."""
    delayed = [r.id for r in records if r.state is JobState.DELAYED]
    if not delayed:
        return {}
    parts = parts_of(queue)  # a job is in one partition's delayed set; the others answer None
    async with queue.client.pipeline(transaction=False) as pipe:
        for job_id in delayed:
            for part in parts:
                pipe.zscore(part.keys.delayed, job_id)
        scores = await redis_call(pipe.execute())
    due: dict[str, int] = {}
    for n, job_id in enumerate(delayed):
        found = [s for s in scores[n * len(parts):(n + 1) * len(parts)] if s is not None]
        if found:
            due[job_id] = int(float(found[0]))
    return due


async def jobs_view(
    queue: Queue, records: list[JobRecord], *, show_data: bool, show_trace: bool = True
) -> list[dict[str, Any]]:
    """Job views of one queue's records, with the due times of the delayed ones."""
    due = await due_times(queue, records)
    out = [job_view(r, show_data=show_data, show_trace=show_trace, due_ms=due.get(r.id)) for r in records]
    for view, rec in zip(out, records, strict=True):
        if rec.children:
            view["children"] = await children_view(queue, rec)
    return out


async def children_view(queue: Queue, rec: JobRecord) -> list[dict[str, Any]]:
    """A flow parent's children with their names and states (null once a record is gone)."""
    async with queue.client.pipeline(transaction=False) as pipe:
        for q, job_id in rec.children:
            pipe.hmget(QueueKeys(q, queue.prefix).job(job_id), ["name", "state"])
        replies = await redis_call(pipe.execute())
    return [{"queue": q, "id": i, "name": name, "state": state}
            for (q, i), (name, state) in zip(rec.children, replies, strict=True)]


def event_view(event: Event, *, show_data: bool) -> dict[str, Any]:
    """A queue event; a job's log line and streamed output are withheld without `show_data`."""
    out: dict[str, Any] = {"type": event.type, "job_id": event.job_id, "stream_id": event.id}
    for key, value in event.fields.items():
        if key == "progress":
            try:
                out[key] = codec.loads(value)
            except ValueError:
                out[key] = value
        elif key in DATA_EVENT_FIELDS and not show_data:
            out[key] = None
        else:
            out[key] = value
    return out


async def throughput(queue: Queue) -> dict[str, int]:
    """Jobs finished in the last minute, counted in the completed/failed sets (scored by finish time
    from the Redis clock): two O(log n) calls instead of scanning the events stream. Records deleted
    at once (result_ttl=0) or trimmed by retention within the minute are not counted."""
    client = queue.client
    parts = parts_of(queue)  # a partitioned queue: every partition's sets, each by its node's clock
    nows = await asyncio.gather(*(redis_now_ms(client, part.keys.completed) for part in parts))
    async with client.pipeline(transaction=False) as pipe:
        for part, now in zip(parts, nows, strict=True):
            since = now - THROUGHPUT_WINDOW_S * 1000
            pipe.zcount(part.keys.completed, since, "+inf")
            pipe.zcount(part.keys.failed, since, "+inf")
        replies = [int(n) for n in await pipe.execute()]
    return {"window_s": THROUGHPUT_WINDOW_S, "completed": sum(replies[0::2]), "failed": sum(replies[1::2])}


async def queue_view(
    queue: Queue, *, tasks: Iterable[str] = (), max_groups: int = 10, declared: bool | None = None
) -> dict[str, Any]:
    """Counts by state, paused flag, last minute's throughput, the tasks served and the limits state.
    `declared`: whether the served app declares the queue (None where no app is loaded, as in the CLI)."""
    counts, paused, rate, limits = await asyncio.gather(
        queue.counts(), queue.is_paused(), throughput(queue), queue.limits_state(max_groups)
    )
    return {
        "name": queue.name,
        "declared": declared,
        "paused": paused,
        "counts": {s.value: n for s, n in counts.items()},
        "throughput": rate,
        "tasks": sorted(tasks),
        "limits": limits,
    }


async def oldest_waiting_age_ms(queue: Queue, now_ms: int | None = None) -> int | None:
    """Milliseconds since the oldest waiting job was enqueued (None when nothing waits), at `now_ms`
    (default: now on the clock of the node holding the queue, the one that stamped its jobs).

    Within a priority band the ready set is in arrival order, so the band heads hold the oldest
    arrivals; at most MAX_BANDS_SCANNED bands are read, plus the heads of the first
    MAX_GROUPS_SCANNED groups' ready sets (by name), so a queue with more groups may under-report.
    A partitioned queue: the oldest over its partitions, each aged by its own node's clock."""
    ages = []
    for part in parts_of(queue):
        stamp = await _oldest_enqueued_ms(part)
        if stamp is not None:
            now = await redis_now_ms(queue.client, part.keys.ready) if now_ms is None else now_ms
            ages.append(max(0, now - stamp))
    return max(ages) if ages else None


async def _oldest_enqueued_ms(queue: Queue) -> int | None:
    client, k = queue.client, queue.keys
    heads: list[str] = []
    floor: float | str = "-inf"
    for _ in range(MAX_BANDS_SCANNED):
        found = await client.zrangebyscore(k.ready, floor, "+inf", start=0, num=1, withscores=True)
        if not found:
            break
        head: Any = found[0]
        job_id, score = head
        heads.append(str(job_id))
        floor = (int(score) // _BAND + 1) * _BAND
    if await grouped_waiting(queue) > 0:
        groups = (await known_groups(queue))[:MAX_GROUPS_SCANNED]
        async with client.pipeline(transaction=False) as pipe:
            for group in groups:
                pipe.zrange(k.group_ready(group), 0, 0)
            heads += [str(i) for found in await pipe.execute() for i in found]
    if not heads:
        return None
    async with client.pipeline(transaction=False) as pipe:
        for job_id in heads:
            pipe.hget(k.job(job_id), "ts")
        stamps = [int(t) for t in await pipe.execute() if t is not None]
    return min(stamps) if stamps else None


async def queue_names(client: RedisClient, prefix: str = "cv", also: Iterable[str] = ()) -> list[str]:
    """Every queue ever enqueued to under `prefix` (the registry set), plus `also`, sorted."""
    try:
        names = {str(n) for n in await client.smembers(registry_key(prefix))}
    except (RedisError, OSError) as exc:
        raise ConnectionFailedError(f"Redis unreachable while listing queues: {exc}") from exc
    names.update(also)
    valid = []
    for name in sorted(names):
        try:
            valid.append(validate_queue_name(name))
        except ValueError:
            continue
    return valid


async def list_workers(client: RedisClient, prefix: str = "cv") -> list[dict[str, Any]]:
    """Live workers' registry records, sorted by id; index members whose record expired are pruned."""
    keys = WorkerRegistryKeys(prefix)
    try:
        ids = [str(i) for i in await client.zrange(keys.index, 0, -1)]
        if not ids:
            return []
        raw = await client.mget([keys.worker(i) for i in ids])
        live: list[dict[str, Any]] = []
        dead: list[str] = []
        for worker_id, value in zip(ids, raw, strict=True):
            record = _parse_record(value)
            if record is None:
                dead.append(worker_id)
            else:
                live.append(record)
        if dead:
            await client.zrem(keys.index, *dead)
    except (RedisError, OSError) as exc:
        raise ConnectionFailedError(f"Redis unreachable while listing workers: {exc}") from exc
    return sorted(live, key=lambda r: str(r.get("id", "")))


def _parse_record(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        record = codec.loads(value)
    except Exception:
        return None
    return record if isinstance(record, dict) else None


__all__ = [
    "DATA_EVENT_FIELDS", "due_times", "event_view", "job_view", "jobs_view", "list_workers", "oldest_waiting_age_ms",
    "queue_names", "queue_view", "throughput",
]
