"""Reading a page of job records with bounded bytes.

A record's payload and result may each be 512 KiB, its progress 64 KiB: a listing of 1,000 whole
records could move half a gigabyte out of Redis. A page is read in two round trips instead: first
each job's small summary fields, with the sizes of its large fields (HSTRLEN reads no value); then
the large fields of as many jobs, in order, as fit in `max_bytes`. The page ends before the first job
that does not fit (it always holds at least one job), and the listing's cursor continues there.
Payload and result are read only for callers that show them (`with_data`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from conveyor.job import RECORD_FIELDS, JobRecord, JobState
from conveyor.redis.faults import redis_call

if TYPE_CHECKING:
    from conveyor.queue import Queue

DATA_FIELDS = ("data", "result")  # payloads: read only when shown
SIZED_FIELDS = ("progress", "error", "kids")  # shown to every reader, but up to tens of KiB each
SUMMARY_FIELDS = tuple(f for f in RECORD_FIELDS if f not in DATA_FIELDS + SIZED_FIELDS)
LISTING_MAX_BYTES = 4 * 1024 * 1024  # what the API lets one listing request read of records

Located = tuple["Queue", str]  # a job id and the queue (partition) whose sets listed it


class PageRead(NamedTuple):
    """Records read (missing ones left out) and how many of the listed ids they cover."""

    records: list[JobRecord]
    consumed: int


async def read_fields(located: Sequence[Located], fields: Sequence[str]) -> list[dict[str, str]]:
    """`fields` of each job in one pipelined round trip (an empty dict: no such job)."""
    if not located:
        return []
    client = located[0][0].client
    async with client.pipeline(transaction=False) as pipe:
        for part, job_id in located:
            pipe.hmget(part.keys.job(job_id), list(fields))
        replies = await redis_call(pipe.execute())
    return [{f: v for f, v in zip(fields, values, strict=True) if v is not None} for values in replies]


async def read_page(
    queue_name: str, located: Sequence[Located], state: JobState | None, *,
    with_data: bool = True, max_bytes: int | None = None,
) -> PageRead:
    """The records of `located`, in order, reading no more than `max_bytes` of field values (None:
    no bound; the first job is read whatever its size). Without `with_data`, data and result are not
    read (the records hold None)."""
    if not located:
        return PageRead([], 0)
    large = SIZED_FIELDS + (DATA_FIELDS if with_data else ())
    part0 = located[0][0]
    async with part0.client.pipeline(transaction=False) as pipe:
        for part, job_id in located:
            key = part.keys.job(job_id)
            pipe.hmget(key, list(SUMMARY_FIELDS))
            for field in large:
                pipe.hstrlen(key, field)
        replies = await redis_call(pipe.execute())
    step = 1 + len(large)
    summaries: list[dict[str, str]] = []
    total, consumed = 0, 0
    for n in range(len(located)):
        values = replies[n * step]
        summary = {f: v for f, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
        size = sum(len(v) for v in summary.values()) + sum(int(x) for x in replies[n * step + 1:(n + 1) * step])
        if max_bytes is not None and consumed and total + size > max_bytes:
            break
        total += size
        summaries.append(summary)
        consumed += 1
    kept = [(loc, s) for loc, s in zip(located[:consumed], summaries, strict=True) if s]
    extra = await read_fields([loc for loc, _ in kept], large)
    records = [JobRecord.from_hash(queue_name, job_id, {**s, **x}, state)
               for ((_, job_id), s), x in zip(kept, extra, strict=True)]
    return PageRead(records, consumed)
