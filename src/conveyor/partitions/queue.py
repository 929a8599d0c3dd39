"""PartitionedQueue: the Queue API over N partitions.

Placement: a job with a group goes to the group's partition (a tenant's jobs stay in order in one
partition and its group limits hold exactly); otherwise a job with an idempotency key, an id or a
job key (`key`, `key_mode`) goes to that key's partition (so the key deduplicates, and a keyed job
meets the other jobs of its key); any other job goes round-robin and gets an id that names its
partition (`P<i>.<hex>`), so finding it later costs one call. Ordering guarantees
(priority, then arrival) hold within a partition, not across partitions.

Re-partitioning: `previous=N` makes a queue of `partitions=M` also read and serve the partitions of
the old layout (no new job goes there); once they are empty, drop `previous` (docs/scaling.md).
The layouts a queue is used with are recorded in Redis (partitions/layout.py) for readers that do
not declare the queue.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import re
import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from conveyor.cancelling import cancel_and_wait
from conveyor.errors import (
    ConfigurationError,
    InvalidOptionError,
    InvalidStateError,
    JobNotFoundError,
    QueueNotEmptyError,
    RetiredLayoutError,
)
from conveyor.events import Event, EventsMode
from conveyor.job import Job, JobRecord, JobState
from conveyor.limits.admin import waiting_ids
from conveyor.limits.model import GroupLimits, RateLimit
from conveyor.listing import Located
from conveyor.options import JobOptions, JobSpec
from conveyor.partitions.carry import carry_log, carry_settings, set_partition_limits, share_out
from conveyor.partitions.held import find_holders, names_of
from conveyor.partitions.layout import read_layout, record_layout
from conveyor.queue import MAX_LIST_CURSOR, Queue, Retention, check_batch_duplicates
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import MAX_PARTITIONS, partition_layout_key, partition_tag

logger = logging.getLogger(__name__)
_GENERATED = re.compile(r"^P(\d{1,2})\.")
_FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
_PENDING = (JobState.WAITING.value, JobState.DELAYED.value, JobState.ACTIVE.value)
_CURSOR_SEP = "|"
# What a job moved to the current layout by `retry_in` keeps of its stored options (a key's
# debounce or throttle acted when the job was added, not when it is retried).
_MOVED_OPTIONS = ("attempts", "backoff", "timeout", "result_ttl", "failed_ttl", "group", "cost")
# A page of a partitioned queue is merged from the first cursor + limit ids of every partition (the
# page's jobs may all sit in one of them), so a deep cursor costs that many ids per partition: the
# cursor is capped here, not at a plain queue's MAX_LIST_CURSOR (docs/scaling.md, "Listing jobs").
MAX_PARTITIONED_LIST_CURSOR = 10_000


def route_partition(key: str, count: int) -> int:
    """The partition of a group, idempotency key or job id (stable across processes)."""
    return zlib.crc32(key.encode()) % count


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def checked_partition_counts(partitions: object, previous: object) -> list[int]:
    """The previous counts as a list, once `partitions` and `previous` are known good (a bool is
    not a count, though Python calls it an int); ConfigurationError otherwise."""
    if isinstance(partitions, bool) or not isinstance(partitions, int) or not 1 <= partitions <= MAX_PARTITIONS:
        raise ConfigurationError(f"partitions must be an integer in [1, {MAX_PARTITIONS}], got {partitions!r:.40}")
    earlier: list[Any] = ([] if previous is None else [previous] if _is_count(previous)
                          else list(previous) if isinstance(previous, (list, tuple)) else [previous])
    if any(not _is_count(n) or not 0 <= n <= MAX_PARTITIONS for n in earlier):
        raise ConfigurationError(
            f"previous must be an integer in [0, {MAX_PARTITIONS}] (0: the plain queue), got {previous!r:.40}")
    return earlier


def layout_tags(name: str, count: int) -> list[str]:
    """The partition tags of a layout; layout 0 is the plain queue (its keys have no partition tag)."""
    return [""] if count == 0 else [partition_tag(name, i, count) for i in range(count)]


class PartitionedQueue(Queue):
    """A queue over `partitions` partitions; `previous`: the partition count before a
    re-partition (0: the queue was plain), whose partitions are still read and served until empty."""

    partitioned = True

    def __init__(
        self, name: str, *, partitions: int, previous: int | Sequence[int] | None = None, **options: Any
    ) -> None:
        earlier = checked_partition_counts(partitions, previous)
        current = layout_tags(name, partitions)
        super().__init__(name, partition_tag=current[0], **options)
        self.partition_count = partitions
        self.previous_counts = tuple(n for n in dict.fromkeys(earlier) if n != partitions)
        common = {k: v for k, v in options.items() if k != "redis"}
        self.parts: list[Queue] = [Queue(name, redis=self.client, partition_tag=tag, **common) for tag in current]
        earlier_tags = (t for n in self.previous_counts for t in layout_tags(name, n))
        old = [t for t in dict.fromkeys(earlier_tags) if t not in current]
        # Every partition that may hold jobs: the current ones, then those of the previous layouts.
        self.serving: list[Queue] = self.parts + [Queue(name, redis=self.client, partition_tag=t, **common)
                                                  for t in old]
        self._rr = 0
        self._layout_recorded = False

    def __repr__(self) -> str:
        return f"PartitionedQueue({self.name!r}, partitions={self.partition_count})"

    # ------------------------------------------------------------------ placement

    def _place(self, spec: JobSpec) -> tuple[int, JobSpec]:
        opts = spec.options.merged_over(self.defaults)
        n = self.partition_count
        key = opts.group or opts.idempotency_key or opts.job_id or opts.key
        if key:  # a keyed job (debounce, throttle, latest) keeps its generated id: a newer one replaces it
            return route_partition(key, n), spec
        self._rr = (self._rr + 1) % n
        job_id = f"P{self._rr}.{time.time_ns() // 1000:x}{secrets.token_hex(4)}"
        return self._rr, JobSpec(spec.name, spec.data, replace(spec.options, job_id=job_id))

    def _previous_homes(self, route: str) -> list[Queue]:
        """The partition each previous layout placed a job routed by `route` (its group, key or
        id) in, as that layout's producers did."""
        serving = {part.keys.tag: part for part in self.serving}
        homes: list[Queue] = []
        for count in self.previous_counts:
            tags = layout_tags(self.name, count)
            homes.append(serving[tags[0] if count == 0 else tags[route_partition(route, count)]])
        return homes

    async def register(self) -> None:
        """Record the name and the partition layout (`conveyor.partitions.open_queue` reads it, so
        the CLI and the API find every partition of a queue they do not declare). Idempotent."""
        await self._register()

    async def _register(self) -> None:
        if not self._layout_recorded:
            await self._carry_settings_if_repartitioning()
            if not await record_layout(self.client, self.prefix, self.name, self.partition_count,
                                       self.previous_counts):
                # A rolling deploy's old process: it keeps its own layout (workers serving the newer
                # one with previous_partitions serve it too) but does not make it current again.
                logger.warning("queue %s: declared with %d partitions, but the queue was re-partitioned "
                               "since; the recorded current layout stays (declare previous_partitions "
                               "with the current count to re-partition)", self.name, self.partition_count)
            self._layout_recorded = True
        await Queue._register(self)

    async def _carry_settings_if_repartitioning(self) -> None:
        """Before this declaration makes its layout current (a re-partition: the current layout is
        among `previous`, or nothing is recorded yet and `previous` names the queue's old layout),
        copy the queue's settings from the layout still current into the new partitions
        (partitions/carry.py says why the copy comes first)."""
        if not self.previous_counts:
            return
        recorded = await read_layout(self.client, self.prefix, self.name)
        if recorded is None:
            source_count = 0 if 0 in self.previous_counts else self.previous_counts[0]
        elif recorded[0] != self.partition_count and recorded[0] in self.previous_counts:
            source_count = recorded[0]
        else:
            return  # already current, or superseded by a newer layout: nothing to carry
        by_tag = {part.keys.tag: part for part in self.serving}
        source = [by_tag[tag] for tag in layout_tags(self.name, source_count)]
        await carry_settings(source, self.parts, lambda group: route_partition(group, self.partition_count))

    async def add_specs(self, specs: Sequence[JobSpec], *, parse: Any = None) -> list[Job[Any]]:
        """Each job to its partition (see the module docstring); one call per partition used.
        All or nothing per partition, not across partitions. A job whose idempotency key or id a
        partition already holds (another group's, or a previous layout's) goes where that job is, so
        the key or id names one job across the queue and across a re-partition."""
        placed = [self._place(spec) for spec in specs]
        # Every spec is checked before anything is written, and what a plain queue refuses for the
        # whole batch is refused here for the whole batch, not when a later partition's share is sent.
        encoded = [self.parts[0].encode(spec) for _, spec in placed]
        check_batch_duplicates(encoded)
        if len(encoded) > 1 and any(e.keyed for e in encoded):
            raise InvalidOptionError("keyed jobs (key, key_mode) are enqueued one at a time, not in bulk")
        await self._register()
        targets = [self.parts[p] for p, _ in placed]
        for position, part in (await self._held_elsewhere(specs, targets)).items():
            targets[position] = part
        if len(specs) == 1 and encoded[0].keyed:  # keyed jobs are added one at a time
            targets[0] = await self._previous_home_of_key(specs[0], targets[0]) or targets[0]
        by_part: dict[str, list[int]] = {}
        for position, part in enumerate(targets):
            by_part.setdefault(part.keys.tag, []).append(position)
        jobs: list[Job[Any] | None] = [None] * len(specs)
        for positions in by_part.values():
            added = await Queue.add_specs(targets[positions[0]], [placed[i][1] for i in positions], parse=parse)
            for i, job in zip(positions, added, strict=True):
                jobs[i] = job
        return [j for j in jobs if j is not None]

    async def _held_elsewhere(self, specs: Sequence[JobSpec], targets: list[Queue]) -> dict[int, Queue]:
        """The partition (of any layout served) already holding the job an explicit id or
        idempotency key names, by the job's position; a job repeating a key or id of an earlier
        job of the batch follows that job (partitions/held.py). Without it, the same id with
        another group, or repeated after a re-partition, made a second job in another partition.
        One call per partition, all at once, only for jobs with an id or a key."""
        probes: list[tuple[int, str, str]] = []
        for position, spec in enumerate(specs):
            opts = spec.options.merged_over(self.defaults)
            if opts.idempotency_key or opts.job_id:
                probes.append((position, opts.idempotency_key or "", opts.job_id or ""))
        held = await find_holders(self.serving, probes, targets)
        first_of: dict[tuple[str, str], Queue] = {}
        for position, key, job_id in probes:
            names = names_of(key, job_id)
            home = held.get(position) or next((first_of[n] for n in names if n in first_of), targets[position])
            held[position] = home
            for name in names:
                first_of.setdefault(name, home)
        return held

    async def _previous_home_of_key(self, spec: JobSpec, target: Queue) -> Queue | None:
        """The partition of a previous layout where the last job of a keyed job's key still waits,
        is delayed or runs, so the new job goes there and debounce, throttle and latest-wins act on
        that job; None when there is none (the key then moves to the current layout). Two small
        reads per previous layout, only while previous layouts are served."""
        opts = spec.options.merged_over(self.defaults)
        if not self.previous_counts or not opts.key:
            return None
        for part in self._previous_homes(opts.group or opts.key):
            if part.keys.tag == target.keys.tag:
                continue
            last = await redis_call(part.client.hget(part.keys.job_key(opts.key), "job"))
            if last and await redis_call(part.client.hget(part.keys.job(str(last)), "state")) in _PENDING:
                return part
        return None

    # ------------------------------------------------------------------ finding a job

    def _guess(self, job_id: str) -> int:
        m = _GENERATED.match(job_id)
        if m and int(m.group(1)) < self.partition_count:
            return int(m.group(1))
        return route_partition(job_id, self.partition_count)

    def _search_order(self, job_id: str) -> list[Queue]:
        first = self.parts[self._guess(job_id)]
        return [first] + [q for q in self.serving if q is not first]

    async def locate(self, job_id: str) -> Queue | None:
        """The partition holding `job_id` (its likely partition first), or None."""
        for part in self._search_order(job_id):
            if await redis_call(part.client.exists(part.keys.job(job_id))):
                return part
        return None

    async def _part_of(self, job_id: str) -> Queue:
        part = await self.locate(job_id)
        if part is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return part

    def job(self, job_id: str, *, parse: Any = None) -> Job[Any]:
        """A handle that finds the job in whichever partition holds it: its reads and actions
        locate the job each time, and `wait` follows every partition's events. An id alone does
        not say where its job is (one placed by its group or key, or left by a previous layout,
        may sit in any partition); a handle from `add` is bound to the job's partition already."""
        return Job(self, job_id, parse=parse)

    def likely_part(self, job_id: str) -> Queue:
        """The partition the id alone suggests (a generated id names it; else the id's hash)."""
        return self.parts[self._guess(job_id)]

    async def get_job(self, job_id: str) -> JobRecord | None:
        part = await self.locate(job_id)
        return None if part is None else await Queue.get_job(part, job_id)

    async def get_state(self, job_id: str) -> JobState | None:
        part = await self.locate(job_id)
        return None if part is None else await Queue.get_state(part, job_id)

    async def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        part = await self.locate(job_id)
        return [] if part is None else await Queue.get_logs(part, job_id, start, end)

    async def cancel(self, job_id: str) -> JobState:
        return await Queue.cancel(await self._part_of(job_id), job_id)

    async def retry(self, job_id: str) -> JobState:
        """Back to waiting with fresh attempts, in the current layout (see `retry_in`); returns the
        state it went to."""
        return await self.retry_in(await self._part_of(job_id), job_id)

    async def retry_in(self, part: Queue, job_id: str) -> JobState:
        """Retry `job_id`, held by `part`. A job of a previous layout's partition moves to the
        current layout, which every worker of the queue serves (the previous layout may no longer
        be): its log lines are copied there, it is added there under the same id (with its group,
        attempts, backoff, timeout, cost and priority), then its old record is removed. The steps
        touch two slots; a fault between them leaves the old record beside the waiting copy (or the
        copied lines alone, which the next retry writes again), and retrying that record again only
        removes it. RetiredLayoutError when the current layout holds another job of that id."""
        if part.keys.tag in {p.keys.tag for p in self.parts}:
            return await Queue.retry(part, job_id)
        record = await Queue.get_job(part, job_id)
        if record is None:
            raise JobNotFoundError(f"job {job_id!r} not found")
        if record.state not in (JobState.FAILED, JobState.CANCELLED):
            raise InvalidStateError(job_id, record.state.value, "retry")
        moved = {k: v for k, v in record.options.items() if k in _MOVED_OPTIONS}
        options = JobOptions.from_mapping({**moved, "priority": record.priority or None})
        target = self.group_homes(options.group)[0] if options.group else self.likely_part(job_id)
        copy = await Queue.get_job(target, job_id)
        if copy is not None and (copy.name, copy.data) != (record.name, record.data):
            raise RetiredLayoutError(job_id, record.state.value, (
                f"job {job_id!r} of queue {self.name!r} is in a previous partition layout, and its id is "
                "taken by another job in the current one: add it again as a new job"))
        if copy is None:  # the id as it was (a generated all-digits id too), so handles keep finding it
            await carry_log(part, target, job_id)  # first: the new run's lines come after the old ones
            args = replace(target.encode(JobSpec(record.name, record.data, options)), job_id=job_id)
            await target.scripts.add([args])
        await Queue.remove(part, job_id)
        return JobState.WAITING  # (a flow's jobs are never on a partitioned queue)

    async def promote(self, job_id: str) -> None:
        await Queue.promote(await self._part_of(job_id), job_id)

    async def remove(self, job_id: str) -> None:
        await Queue.remove(await self._part_of(job_id), job_id)

    async def children(self, job_id: str) -> Any:
        return await Queue.children(await self._part_of(job_id), job_id)

    async def get_output(self, job_id: str, start: int = 0) -> Any:
        part = await self.locate(job_id)
        return None if part is None else await Queue.get_output(part, job_id, start)

    async def add_flow(self, root: Any) -> Job[Any]:
        """Flows are not placed over partitions yet: a flow's jobs go on plain queues."""
        raise ConfigurationError(f"queue {self.name!r} is partitioned: flows run on plain queues only")

    # ------------------------------------------------------------------ reading

    async def flow_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in self.serving:
            for key, n in (await Queue.flow_counts(part)).items():
                total[key] = total.get(key, 0) + n
        return total

    async def counts(self) -> dict[JobState, int]:
        total = dict.fromkeys(JobState, 0)
        for part in self.serving:
            for state, n in (await Queue.counts(part)).items():
                total[state] += n
        return total

    async def held(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in self.serving:
            for name, n in (await Queue.held(part)).items():
                total[name] = total.get(name, 0) + n
        return total

    async def is_paused(self) -> bool:
        return all([await Queue.is_paused(part) for part in self.parts])

    async def listed_ids(self, state: JobState | str, *, cursor: int = 0, limit: int = 50) -> list[Located]:
        """Ids of one state over all partitions: finished ones newest first, delayed by due time,
        active by lease deadline (merged by score); waiting ones each partition's claim order,
        taken from the partitions in turn (the order fair workers claim them in). The cursor goes
        up to MAX_PARTITIONED_LIST_CURSOR: a page reads at most cursor + limit ids per partition."""
        state = JobState(state)
        if not 1 <= limit <= 1000:
            raise InvalidOptionError("limit must be in [1, 1000]")
        if not 0 <= cursor <= MAX_LIST_CURSOR:
            raise InvalidOptionError(f"cursor must be in [0, {MAX_LIST_CURSOR}]")
        if cursor > MAX_PARTITIONED_LIST_CURSOR:  # checked before any read: the work is bounded
            raise InvalidOptionError(
                f"cursor must be at most {MAX_PARTITIONED_LIST_CURSOR} on partitioned queue {self.name!r}, got "
                f"{cursor} (each page is merged from every partition; counts give the totals)")
        want = cursor + limit
        merged: list[Located]
        if state is JobState.WAITING:  # ids only, as many as the page may need from each partition
            lists = [[(p, str(i)) for i in await waiting_ids(p, 0, want)] for p in self.serving]
            merged = [i for group in _round_robin(lists) for i in group]
        else:
            newest_first = state in _FINISHED
            scored: list[list[tuple[float, str, int]]] = []
            for n, part in enumerate(self.serving):
                key = part.keys.state_set(state.value)
                fetch = part.client.zrevrange if newest_first else part.client.zrange
                rows = await redis_call(fetch(key, 0, want - 1, withscores=True))
                scored.append([(-s if newest_first else s, str(i), n) for i, s in rows])
            merged = [(self.serving[n], i) for _, i, n in heapq.merge(*scored)]
        return merged[cursor:want]

    # ------------------------------------------------------------------ events

    async def last_event_id(self) -> str:
        return _CURSOR_SEP.join([await Queue.last_event_id(p) for p in self.serving])

    async def read_events(self, cursor: str = "0-0", *, count: int = 1000, block_ms: int | None = None) -> list[Event]:
        """Events of every partition after `cursor` (a composite of one stream id per partition, or
        "0-0"), merged by time; each event's id is the composite cursor just after it. With
        `block_ms`, when no partition has events yet, it waits on every partition at once and
        returns with the first that has some (events are a view: order across partitions is by
        stream time)."""
        cursors = cursor.split(_CURSOR_SEP) if _CURSOR_SEP in cursor else [cursor] * len(self.serving)
        if len(cursors) != len(self.serving):
            cursors = (cursors + ["0-0"] * len(self.serving))[: len(self.serving)]
        found = [await Queue.read_events(part, cursors[i], count=count) for i, part in enumerate(self.serving)]
        if block_ms is not None and not any(found):
            found = await self._wait_for_events(cursors, count, block_ms)
        batches = [[(_stream_time(e.id), i, e) for e in batch] for i, batch in enumerate(found)]
        out: list[Event] = []
        for _, i, event in heapq.merge(*batches):
            cursors[i] = event.id
            out.append(replace(event, id=_CURSOR_SEP.join(cursors)))
            if len(out) >= count:
                break
        return out

    async def _wait_for_events(self, cursors: list[str], count: int, block_ms: int) -> list[list[Event]]:
        """One blocking read per partition (each its own slot), all at once; the first answer ends
        the others. A read that answered while the others were being ended still counts."""
        tasks = [asyncio.ensure_future(Queue.read_events(part, cursors[i], count=count, block_ms=block_ms))
                 for i, part in enumerate(self.serving)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(tasks)
        for task in tasks:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
        return [[] if task.cancelled() else task.result() for task in tasks]

    async def follow(self, *, force: bool = False) -> None:
        for part in self.serving:
            await Queue.follow(part, force=force)

    async def set_events_mode(self, mode: EventsMode | str) -> None:
        """Every partition writes the same events (docs/events.md)."""
        for part in self.serving:
            await Queue.set_events_mode(part, mode)

    async def events_mode(self) -> EventsMode:
        return await Queue.events_mode(self.parts[0])

    async def completed_bytes(self) -> int:
        return sum([await Queue.completed_bytes(p) for p in self.serving])

    # ------------------------------------------------------------------ admin over every partition

    async def pause(self) -> None:
        for part in self.serving:
            await Queue.pause(part)

    async def resume(self) -> None:
        for part in self.serving:
            await Queue.resume(part)

    async def drain(self, *, include_delayed: bool = True) -> int:
        return sum([await Queue.drain(p, include_delayed=include_delayed) for p in self.serving])

    async def purge(self, state: JobState | str) -> int:
        return sum([await Queue.purge(p, state) for p in self.serving])

    async def obliterate(self, *, force: bool = False) -> None:
        """Every partition of every layout, the ones this handle serves and any other the layout
        record names, then the record (a fault in between leaves it: a retry ends it). Without the
        recorded ones, a handle not declaring a previous layout that still held jobs deleted the
        record and left those jobs where no reader would look again. Without `force`, a job active in any
partition refuses it before anything is deleted (a job leased between that check and its
partition's own atomic check still refuses there, after the partitions before it went)."""
        parts = await self._every_recorded_partition()
        if not force:  # every partition checked before the first is deleted, not one after another
            active = [await redis_call(p.client.zcard(p.keys.active)) for p in parts]
            if sum(active):
                raise QueueNotEmptyError(f"queue {self.name!r} has {sum(active)} active jobs; pass force=True")
        for part in parts:
            await Queue.obliterate(part, force=force)
        await redis_call(self.client.delete(partition_layout_key(self.name, self.prefix)))
        self._layout_recorded = False

    async def _every_recorded_partition(self) -> list[Queue]:
        """`serving`, then the partitions of the layouts recorded in Redis that it does not cover."""
        recorded = await read_layout(self.client, self.prefix, self.name)
        counts = [] if recorded is None else [recorded[0], *recorded[1]]
        known = {part.keys.tag for part in self.serving}
        extra = [tag for count in counts for tag in layout_tags(self.name, count) if tag not in known]
        return self.serving + [Queue(self.name, redis=self.client, prefix=self.prefix, partition_tag=tag)
                               for tag in dict.fromkeys(extra)]

    async def recover_stalled(self, max_stalls: int = 1, max_lapses: int = 10) -> tuple[int, int]:
        recovered = failed = 0
        for part in self.serving:
            r, f = await Queue.recover_stalled(part, max_stalls, max_lapses)
            recovered, failed = recovered + r, failed + f
        return recovered, failed

    async def set_retention(self, retention: Retention) -> None:
        """Count and byte limits are shared out between the current layout's partitions so that the
        shares add up to the limit (each at least 1); age limits apply to each whole. A previous
        layout's partition that still holds jobs waiting, delayed or active gets the same settings
        as a current partition, so the records its backlog leaves are trimmed too; an empty one keeps
        what it has (it gets no new records)."""
        n = len(self.parts)
        counts = share_out(retention.completed_max_count, n)
        failed = share_out(retention.failed_max_count, n)
        sizes = share_out(retention.completed_max_bytes, n)
        shares = [replace(retention, completed_max_count=counts[i], failed_max_count=failed[i],
                          completed_max_bytes=sizes[i]) for i in range(n)]
        for part, share in zip(self.parts, shares, strict=True):
            await Queue.set_retention(part, share)
        for part in self.serving[n:]:
            pending = await Queue.counts(part)
            if any(pending[s] for s in (JobState.WAITING, JobState.DELAYED, JobState.ACTIVE)):
                await Queue.set_retention(part, shares[0])

    async def set_limits(
        self, *, rate: RateLimit | None = None, concurrency: int | None = None, cost: RateLimit | None = None,
        group_defaults: GroupLimits | None = None,
    ) -> None:
        """Queue-wide limits are split evenly between the partitions (each enforces its share;
        docs/scaling.md says what that means); group limits apply whole, as a group lives in one
        partition. The partitions of a previous layout this handle serves are set too, each with
        the share its own layout gives it, so limits set during a re-partition also hold for the
        jobs still waiting there (each layout enforces the limit on its own until it is empty)."""
        whole = GroupLimits(concurrency=concurrency, rate=rate, cost=cost)
        await set_partition_limits(self.parts, whole, group_defaults, self.partition_count)
        current = {part.keys.tag for part in self.parts}
        for count in self.previous_counts:
            parts = [part for part in self.serving
                     if part.keys.tag in set(layout_tags(self.name, count)) - current]
            await set_partition_limits(parts, whole, group_defaults, max(count, 1))

    async def set_group_limits(
        self, group: str, *, concurrency: int | None = None, rate: RateLimit | None = None,
        cost: RateLimit | None = None,
    ) -> None:
        """The group's partition of each layout served: during a re-partition its older jobs wait in
        the previous layout's partition, which enforces the limits on its own."""
        for part in self.group_homes(group):
            await Queue.set_group_limits(part, group, concurrency=concurrency, rate=rate, cost=cost)

    async def set_group_weight(self, group: str, weight: float) -> None:
        for part in self.group_homes(group):
            await Queue.set_group_weight(part, group, weight)

    def group_homes(self, group: str) -> list[Queue]:
        """The partition a group's jobs go to in the current layout, then in each previous one (where
        its older jobs may still wait during a re-partition)."""
        homes = [self.parts[route_partition(group, self.partition_count)]]
        return homes + [part for part in self._previous_homes(group) if part not in homes]

    async def limits_state(self, max_groups: int = 50) -> dict[str, Any]:
        """Limits and their state over every partition: counts, backlogs and the group list summed
        or joined; the queue-wide concurrency as the sum of the partitions' shares; the rate and
        cost limiters as the first partition's share (each partition enforces its own share)."""
        states = [await Queue.limits_state(p, max_groups) for p in self.serving]
        return merge_limits_states(states, max_groups)

    async def close(self) -> None:
        await Queue.close(self)


def _stream_time(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


T = TypeVar("T")


def _round_robin(lists: Iterable[list[T]]) -> list[list[T]]:
    lists = [list(x) for x in lists]
    rounds: list[list[T]] = []
    depth = max((len(x) for x in lists), default=0)
    for i in range(depth):
        rounds.append([x[i] for x in lists if i < len(x)])
    return rounds


def merge_limits_states(states: list[dict[str, Any]], max_groups: int) -> dict[str, Any]:
    """One `limits_state` of a partitioned queue from its partitions' (the first one's settings)."""
    merged = dict(states[0])
    merged["partitions"] = len(states)
    merged["paused"] = all(s["paused"] for s in states)
    merged["limits_path"] = any(s["limits_path"] for s in states)
    merged["active"] = sum(s["active"] for s in states)
    blocked = [s["blocked_until_ms"] for s in states if s["blocked_until_ms"] is not None]
    merged["blocked_until_ms"] = max(blocked) if blocked else None
    shares = [s["concurrency"] for s in states if s["concurrency"] is not None]
    merged["concurrency"] = None if not shares else {
        "limit": sum(c["limit"] for c in shares), "active": sum(c["active"] for c in shares)}
    merged["waiting"] = {k: sum(s["waiting"][k] for s in states) for k in ("ungrouped", "grouped")}
    groups = {k: sum(s["groups"][k] for s in states) for k in ("ready", "parked", "capped", "known")}
    merged["groups"] = {**groups, "list": [g for s in states for g in s["groups"]["list"]][:max_groups]}
    return merged
