"""Per-queue scaling signals read from Redis: backlog, oldest waiting age, recent job durations and
the suggested number of worker processes.

Suggested workers (stated in docs/deployment.md):

    slots   = (backlog + active) * min(1, mean_duration_s / target_s)
    workers = ceil(slots / concurrency), at most ceil(fleet_cap / concurrency), 0 when idle

`backlog` is the waiting jobs (0 while the queue is paused: nothing may start), `active` the jobs
running now, `mean_duration_s` the mean run time of the queue's most recent finished jobs (unknown:
1 job per slot), `target_s` how soon the work present should be done, `concurrency` the slots of one
worker process for the queue (as live workers report it, else as the app declares it) and
`fleet_cap` the queue's fleet-wide concurrency limit, when it has one.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from conveyor.job import JobState
from conveyor.partitions.reading import parts_of
from conveyor.queue import Queue
from conveyor.redis.faults import redis_call
from conveyor.views import oldest_waiting_age_ms

DEFAULT_TARGET_S = 60.0
DEFAULT_CONCURRENCY = 10  # the app's default when a queue is neither declared nor served
DURATION_SAMPLE = 50  # most recent completed and failed jobs each, for the mean run time
MIN_TARGET_S, MAX_TARGET_S = 1.0, 86_400.0


async def oldest_waiting_ms(queue: Queue, now_ms: int | None = None) -> int | None:
    """Age of the oldest waiting job at `now_ms` (default: the queue's clock now), or None when
    nothing waits (see conveyor.views)."""
    return await oldest_waiting_age_ms(queue, now_ms)


async def mean_duration_s(queue: Queue, sample: int = DURATION_SAMPLE) -> tuple[float | None, int]:
    """Mean run time (finish - start of the last attempt) of the most recent finished jobs, and how
    many jobs it is taken over. Bounded: two ZREVRANGEs and one pipelined HMGET per job."""
    parts = parts_of(queue)  # a partitioned queue: the most recent of each partition
    async with queue.client.pipeline(transaction=False) as pipe:
        for part in parts:
            pipe.zrevrange(part.keys.completed, 0, sample - 1)
            pipe.zrevrange(part.keys.failed, 0, sample - 1)
        finished = await redis_call(pipe.execute())
    ids = [(part, job_id) for i, part in enumerate(parts) for job_id in [*finished[2 * i], *finished[2 * i + 1]]]
    if not ids:
        return None, 0
    async with queue.client.pipeline(transaction=False) as pipe:
        for part, job_id in ids:
            pipe.hmget(part.keys.job(job_id), "started", "finished")
        times = await redis_call(pipe.execute())
    runs = [int(end) - int(start) for start, end in times if start and end and int(end) >= int(start)]
    if not runs:
        return None, 0
    return sum(runs) / len(runs) / 1000, len(runs)


def suggested_workers(
    backlog: int, active: int, mean_s: float | None, target_s: float, concurrency: int, fleet_cap: int | None
) -> int:
    """The formula in the module docstring."""
    if backlog + active <= 0:
        return 0
    per_job = 1.0 if mean_s is None else min(1.0, mean_s / target_s)
    workers = max(1, math.ceil((backlog + active) * per_job / max(1, concurrency)))
    if fleet_cap is not None:
        workers = min(workers, max(1, math.ceil(fleet_cap / max(1, concurrency))))
    return workers


@dataclass(frozen=True, slots=True)
class QueueSignal:
    queue: str
    backlog: int
    delayed: int
    active: int
    paused: bool
    oldest_waiting_s: float | None
    mean_duration_s: float | None
    duration_sample: int
    concurrency: int
    concurrency_source: str  # "workers" (live registry), "declared" (the app) or "default"
    fleet_cap: int | None
    workers: int  # live worker processes serving the queue
    target_s: float
    suggested_workers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _served(workers: Sequence[Mapping[str, Any]], queue: str) -> list[int]:
    """Per-process concurrency of the live workers that serve `queue`."""
    out = []
    for w in workers:
        if queue not in (w.get("queues") or ()):
            continue
        conc = w.get("concurrency")
        value = conc.get(queue) if isinstance(conc, Mapping) else conc
        out.append(int(value) if isinstance(value, int | float) and value > 0 else 0)
    return out


async def queue_signal(
    queue: Queue, *, workers: Sequence[Mapping[str, Any]], declared_concurrency: int | None, target_s: float,
    now_ms: int | None = None,
) -> QueueSignal:
    counts, paused, limits, oldest, (mean_s, sample) = await asyncio.gather(
        queue.counts(), queue.is_paused(), queue.limits_state(max_groups=1), oldest_waiting_ms(queue, now_ms),
        mean_duration_s(queue),
    )
    served = _served(workers, queue.name)
    reported = [c for c in served if c > 0]
    if reported:
        concurrency, source = max(reported), "workers"
    elif declared_concurrency is not None:
        concurrency, source = declared_concurrency, "declared"
    else:
        concurrency, source = DEFAULT_CONCURRENCY, "default"
    cap = limits["concurrency"]["limit"] if limits.get("concurrency") else None
    backlog = counts[JobState.WAITING]
    active = counts[JobState.ACTIVE]
    return QueueSignal(
        queue=queue.name, backlog=backlog, delayed=counts[JobState.DELAYED], active=active, paused=paused,
        oldest_waiting_s=None if oldest is None else oldest / 1000, mean_duration_s=mean_s,
        duration_sample=sample, concurrency=concurrency, concurrency_source=source, fleet_cap=cap,
        workers=len(served), target_s=target_s,
        suggested_workers=suggested_workers(0 if paused else backlog, active, mean_s, target_s, concurrency, cap),
    )
