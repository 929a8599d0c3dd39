"""Queue: the producer and admin side. Every state change is one script call (see redis/lua)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor import codec
from conveyor.backoff import Backoff, parse_backoff
from conveyor.discovery import resolve_redis_url
from conveyor.errors import (
    IdempotencyConflictError,
    InvalidJobError,
    InvalidOptionError,
    InvalidStateError,
    JobNotFoundError,
    PayloadTooLargeError,
    QueueNotEmptyError,
)
from conveyor.events import FOLLOW_REFRESH_S, FOLLOW_TTL_MS, Event, EventsMode
from conveyor.job import RECORD_FIELDS, Job, JobOutput, JobRecord, JobState, record_fields, stored_state
from conveyor.limits import admin as limits_admin
from conveyor.limits.model import GroupLimits, RateLimit
from conveyor.listing import Located, read_page
from conveyor.middleware import Middleware, MiddlewareChain
from conveyor.options import DEFAULT_IDEMPOTENCY_TTL_S, JobOptions, JobSpec
from conveyor.redis.codes import ScriptCode
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.durability import Durability
from conveyor.redis.faults import redis_call
from conveyor.redis.keys import QueueKeys, registry_key
from conveyor.redis.scripts import JobSpecArgs, QueueScripts

if TYPE_CHECKING:
    from conveyor.flows.model import FlowNode
    from conveyor.flows.results import ChildResults

DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024
DEFAULT_EVENTS_MAXLEN = 100_000
BULK_CHUNK = 1000
MAX_LIST_CURSOR = 10**9  # list_jobs offsets, as GET /api/queues/{q}/jobs states
# 128 MiB of completed records per queue: about 20,000 LLM-sized ones (2 KB payload, 4 KB result).
DEFAULT_COMPLETED_MAX_BYTES = 128 * 1024 * 1024
_NAME_MAX = 200
_OPTION_NAMES = frozenset(f.name for f in fields(JobOptions)) | {"max_attempts"}


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing; pass `next_cursor` back to get the next page (None = last page)."""

    jobs: list[JobRecord]
    next_cursor: int | None


@dataclass(frozen=True, slots=True)
class Retention:
    """How many finished records a queue keeps (None = no limit). `completed_max_bytes` bounds the
    completed records kept without a result TTL by their payload + result + 400 bytes each
    (docs/reliability.md, "Retention"); the oldest go first."""

    completed_max_count: int | None = 100_000
    completed_max_age_s: float | None = 86_400.0
    failed_max_count: int | None = None
    failed_max_age_s: float | None = None
    completed_max_bytes: int | None = DEFAULT_COMPLETED_MAX_BYTES


def check_job_name(name: str) -> str:
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX or not name.isprintable():
        raise InvalidJobError(f"job name must be 1-{_NAME_MAX} printable characters, got {name!r}")
    return name


ClientT = TypeVar("ClientT")


class QueueHandle(Generic[ClientT]):
    """What `Queue` and `conveyor.sync.SyncQueue` set up alike: the queue's keys, its client (one of its
    own for a URL or None, else the shared one given) and the options every enqueue encodes with."""

    def _set_up(
        self,
        keys: QueueKeys,
        redis: str | ClientT | None,
        connect: Callable[[str], ClientT],
        defaults: JobOptions | None,
        max_payload_bytes: int,
        events_maxlen: int,
        middleware: Sequence[Middleware],
        durability: Durability | None,
    ) -> str | None:
        """Sets the shared attributes; returns the resolved URL of an own client (None: a shared one)."""
        self.keys = keys
        self.name = keys.queue
        self.prefix = keys.prefix
        url: str | None
        if isinstance(redis, str) or redis is None:
            url = resolve_redis_url(redis)
            self.client: ClientT = connect(url)
            self._owns_client = True
        else:
            url = None
            self.client = redis
            self._owns_client = False
        self.defaults = defaults or JobOptions()
        self.max_payload_bytes = max_payload_bytes
        self.events_maxlen = events_maxlen
        self.middleware = MiddlewareChain(middleware)
        self.durability = durability
        self._registered = False
        return url


class Queue(QueueHandle[RedisClient]):
    """A named queue in Redis. Cheap to create; share one client between many queues."""

    partitioned = False  # conveyor.partitions.PartitionedQueue: the jobs live in its partitions

    def __init__(
        self,
        name: str,
        *,
        redis: str | RedisClient | None = None,
        prefix: str = "cv",
        defaults: JobOptions | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        events_maxlen: int = DEFAULT_EVENTS_MAXLEN,
        middleware: Sequence[Middleware] = (),
        durability: Durability | None = None,
        partition_tag: str = "",
    ) -> None:
        """`durability`: wait for replicas and/or the AOF fsync before an enqueue or a recorded
        outcome is acknowledged (docs/reliability.md, "Durable acknowledgement"). `partition_tag`:
        this handle is one partition of a partitioned queue (conveyor.partitions)."""
        self.redis_url = self._set_up(
            QueueKeys(name, prefix, partition_tag), redis, connect, defaults, max_payload_bytes, events_maxlen,
            middleware, durability,
        )
        self.scripts = QueueScripts(self.client, self.keys, events_maxlen, durability)
        self._followed_at = -FOLLOW_REFRESH_S  # monotonic time this object last marked the queue followed

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    async def close(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Queue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ enqueue

    async def add(
        self,
        name: str,
        data: Any = None,
        *,
        job_id: str | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        attempts: int | None = None,
        backoff: Backoff | float | Mapping[str, Any] | Any = None,
        timeout: float | None = None,
        result_ttl: float | None = None,
        failed_ttl: float | None = None,
        group: str | None = None,
        cost: int | None = None,
        key: str | None = None,
        key_mode: str | None = None,
        key_window: float | None = None,
    ) -> Job[Any]:
        """Enqueue one job. Same id/idempotency key with the same name and data returns the
        existing job (`job.created` is False); with other data it raises IdempotencyConflictError.
        With `key` and `key_mode` (debounce, throttle, latest) a new job of the same key replaces,
        waits for or cancels the previous one (docs/llm.md)."""
        options = JobOptions(
            job_id=job_id, idempotency_key=idempotency_key, idempotency_ttl=idempotency_ttl,
            priority=priority, delay=delay, run_at=run_at, attempts=attempts,
            backoff=None if backoff is None else parse_backoff(backoff),
            timeout=timeout, result_ttl=result_ttl, failed_ttl=failed_ttl, group=group, cost=cost,
            key=key, key_mode=key_mode, key_window=key_window,
        )
        return (await self.add_specs([JobSpec(name, data, options)]))[0]

    async def add_bulk(self, specs: Iterable[JobSpec | Mapping[str, Any]]) -> list[Job[Any]]:
        """Enqueue many jobs; each chunk of up to 1,000 is written atomically (all or nothing),
        and every spec is validated before anything is written."""
        return await self.add_specs([s if isinstance(s, JobSpec) else JobSpec.from_mapping(s) for s in specs])

    async def add_specs(self, specs: Sequence[JobSpec], *, parse: Any = None) -> list[Job[Any]]:
        encoded = [self._encode(spec) for spec in specs]
        check_batch_duplicates(encoded)
        if self.middleware:
            for spec in specs:
                await self.middleware.call("before_enqueue", self.name, spec)
        await self._register()
        jobs: list[Job[Any]] = []
        if any(j.keyed for j in encoded):
            if len(encoded) != 1:
                raise InvalidOptionError("keyed jobs (key, key_mode) are enqueued one at a time, not in bulk")
            reply = await self.scripts.add_keyed(encoded[0])
            encoded = []
            jobs += [Job(self, job_id, created=created, parse=parse) for job_id, created in added_jobs(reply)]
        for start in range(0, len(encoded), BULK_CHUNK):
            reply = await self.scripts.add(encoded[start:start + BULK_CHUNK])
            jobs += [Job(self, job_id, created=created, parse=parse) for job_id, created in added_jobs(reply)]
        if self.middleware:
            for spec, job in zip(specs, jobs, strict=True):
                await self.middleware.call("after_enqueue", self.name, spec, job)
        return jobs

    async def add_flow(self, root: FlowNode) -> Job[Any]:
        """Start a flow (docs/flows.md): `root` and its children, on any queues, validated first, then
        written parents before children. Other queues use this queue's client and prefix, default
        options and payload limit. Returns the root job."""
        from conveyor.flows.producer import FlowProducer

        queues: dict[str, Queue] = {self.name: self}

        def queue_of(name: str) -> Queue:
            q = queues.get(name)
            if q is None:
                q = queues[name] = Queue(name, redis=self.client, prefix=self.prefix,
                                         max_payload_bytes=self.max_payload_bytes, events_maxlen=self.events_maxlen,
                                         durability=self.durability)
            return q

        return await FlowProducer(queue_of).add(root)

    async def children(self, job_id: str) -> ChildResults:
        """Results and errors of a flow parent's children, keyed by "<queue>:<id>" (empty for a job
        without children); JobNotFoundError when the job does not exist, so a wrong id is not taken
        for a flow with nothing in it."""
        from conveyor.flows.results import ChildResults

        record = await self._call(self.client.hgetall(self.keys.job(job_id)))
        if not record:
            raise JobNotFoundError(f"job {job_id!r} not found")
        return ChildResults.from_hash(record)

    async def flow_counts(self) -> dict[str, int]:
        """Flows whose root is on this queue: started, completed, failed (cancelled included), since the
        queue was created (counters in Redis, so every process reads the same totals)."""
        fields = ["flows_started", "flows_completed", "flows_failed"]
        values = await self._call(self.client.hmget(self.keys.meta, fields))
        return {f.removeprefix("flows_"): int(v or 0) for f, v in zip(fields, values, strict=True)}

    def encode(self, spec: JobSpec) -> JobSpecArgs:
        """Validate and encode one job as the add script takes it (what `add_specs` sends)."""
        return self._encode(spec)

    async def register(self) -> None:
        """Record the queue's name in the set of known queues (once per handle)."""
        await self._register()

    def _encode(self, spec: JobSpec) -> JobSpecArgs:
        return encode_spec(self.name, spec, self.defaults, self.max_payload_bytes, self.middleware)

    async def _register(self) -> None:
        if not self._registered:
            await self._call(self.client.sadd(registry_key(self.prefix), self.name))
            self._registered = True

    # ------------------------------------------------------------------ reading

    def job(self, job_id: str, *, parse: Any = None) -> Job[Any]:
        """A handle for an existing job id (no Redis call)."""
        return Job(self, job_id, parse=parse)

    async def get_job(self, job_id: str) -> JobRecord | None:
        h = record_fields(await self._call(self.client.hmget(self.keys.job(job_id), RECORD_FIELDS)))
        if not h:
            return None
        return JobRecord.from_hash(self.name, job_id, h)

    async def get_state(self, job_id: str) -> JobState | None:
        state = await self._call(self.client.hget(self.keys.job(job_id), "state"))
        if state is None:
            return None
        return stored_state(state, self.name, job_id)

    async def get_logs(self, job_id: str, start: int = 0, end: int = -1) -> list[str]:
        return list(await self._call(self.client.lrange(self.keys.log(job_id), start, end)))

    async def get_output(self, job_id: str, start: int = 0) -> JobOutput | None:
        """The job's streamed output so far from byte `start` (one atomic read; `size` is the whole
        output's), or None when the job does not exist."""
        k = self.keys
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hmget(k.job(job_id), ["state", "oatt", "otrunc"])
            pipe.getrange(k.output(job_id), max(0, start), -1)
            pipe.strlen(k.output(job_id))
            (state, att, trunc), raw, size = await self._call(pipe.execute())
        if state is None:
            return None
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
        return JobOutput(text=text, attempt=int(att or 0), size=int(size), truncated=trunc == "1")

    async def counts(self) -> dict[JobState, int]:
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            for state in JobState:
                pipe.zcard(k.state_set(state.value))
            # Grouped waiting jobs live in per-group sets, jobs waiting for a handler in per-name sets.
            pipe.hmget(k.meta, ["gwait", "hwait"])
            replies = await self._call(pipe.execute())
        counts = {state: int(n) for state, n in zip(JobState, replies, strict=False)}
        counts[JobState.WAITING] += sum(int(n or 0) for n in replies[-1])
        return counts

    async def held(self) -> dict[str, int]:
        """Jobs waiting for a worker with a handler for their name, by name (a worker that leased
        them had none; any worker that has one takes them, see docs/internals.md)."""
        names = sorted(await self._call(self.client.smembers(self.keys.holds)))
        if not names:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(self.keys.hold(name))
            sizes = await self._call(pipe.execute())
        return {name: int(n) for name, n in zip(names, sizes, strict=True) if n}

    async def is_paused(self) -> bool:
        return bool(await self._call(self.client.hget(self.keys.meta, "paused")) == "1")

    async def list_jobs(
        self, state: JobState | str, *, cursor: int = 0, limit: int = 50, with_data: bool = True,
        max_bytes: int | None = None,
    ) -> Page:
        """Jobs of one state: waiting in claim order, delayed by due time, active by lease
        deadline, finished ones newest first. The cursor is an offset into that order. Without
        `with_data` payloads and results are not read (None); with `max_bytes` the page ends before
        the first job whose fields would take the read past it (conveyor/listing.py), and
        `next_cursor` continues from that job."""
        state = JobState(state)
        located = await self.listed_ids(state, cursor=cursor, limit=limit)
        page = await read_page(self.name, located, state, with_data=with_data, max_bytes=max_bytes)
        more = page.consumed < len(located) or len(located) == limit
        return Page(page.records, cursor + page.consumed if more else None)

    async def listed_ids(self, state: JobState | str, *, cursor: int = 0, limit: int = 50) -> list[Located]:
        """The ids `list_jobs` pages through, each with the queue (partition) holding it."""
        state = JobState(state)
        if not 1 <= limit <= 1000:
            raise InvalidOptionError("limit must be in [1, 1000]")
        if not 0 <= cursor <= MAX_LIST_CURSOR:
            raise InvalidOptionError(f"cursor must be in [0, {MAX_LIST_CURSOR}]")
        key = self.keys.state_set(state.value)
        stop = cursor + limit - 1
        if state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            ids = await self._call(self.client.zrevrange(key, cursor, stop))
        elif state is JobState.WAITING:
            ids = await limits_admin.waiting_ids(self, cursor, limit)
        else:
            ids = await self._call(self.client.zrange(key, cursor, stop))
        return [(self, str(i)) for i in ids]

    # ------------------------------------------------------------------ events

    async def set_events_mode(self, mode: EventsMode | str) -> None:
        """Which events this queue writes (docs/events.md); applies to the next script run."""
        try:
            value = EventsMode(mode)
        except ValueError:
            raise InvalidOptionError(f"events mode must be one of all, followed, none; got {mode!r}") from None
        await self._call(self.client.hset(self.keys.meta, "events", value.value))

    async def events_mode(self) -> EventsMode:
        raw = await self._call(self.client.hget(self.keys.meta, "events"))
        try:
            return EventsMode(raw) if raw else EventsMode.ALL
        except ValueError:
            return EventsMode.ALL  # an unknown value reads as `all`, as the scripts do

    def _follow_due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if force or now - self._followed_at >= FOLLOW_REFRESH_S:
            self._followed_at = now
            return True
        return False

    async def follow(self, *, force: bool = False) -> None:
        """Mark the queue followed for FOLLOW_TTL_MS, so a queue in `followed` mode writes its
        lifecycle events; every reader below calls this (at most once per FOLLOW_REFRESH_S)."""
        if self._follow_due(force):
            try:
                await self._call(self.client.set(self.keys.follow, "1", px=FOLLOW_TTL_MS))
            except BaseException:
                self._followed_at = -FOLLOW_REFRESH_S
                raise

    async def last_event_id(self) -> str:
        """The newest stream id. Marks the queue followed first, in the same round trip, so no
        lifecycle event after this position is dropped (docs/events.md)."""
        if not self._follow_due():
            last = await self._call(self.client.xrevrange(self.keys.events, count=1))
        else:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    pipe.set(self.keys.follow, "1", px=FOLLOW_TTL_MS)
                    pipe.xrevrange(self.keys.events, count=1)
                    _, last = await self._call(pipe.execute())
            except BaseException:
                self._followed_at = -FOLLOW_REFRESH_S
                raise
        return str(last[0][0]) if last else "0-0"

    async def read_events(self, cursor: str = "0-0", *, count: int = 1000, block_ms: int | None = None) -> list[Event]:
        """Events after `cursor` (a stream id; "0-0" = from the oldest kept, "$" = only new ones)."""
        await self.follow()
        reply = await self._call(
            self.client.xread({self.keys.events: cursor}, count=count, block=block_ms)
        )
        if not reply:
            return []
        entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
        return [Event.from_entry(eid, values) for eid, values in entries]

    async def events(self, cursor: str = "$", *, block_ms: int = 5000) -> AsyncIterator[Event]:
        """Follow the events stream from `cursor` for as long as the caller iterates."""
        if cursor == "$":
            cursor = await self.last_event_id()
        while True:
            batch = await self.read_events(cursor, block_ms=block_ms)
            for event in batch:
                cursor = event.id
                yield event

    # ------------------------------------------------------------------ admin

    async def cancel(self, job_id: str) -> JobState:
        """Waiting/delayed → cancelled now; active → cancellation requested (returns ACTIVE)."""
        code, state = await self.scripts.cancel(job_id)
        self._check(code, job_id, state, "cancel")
        return JobState(state)

    async def retry(self, job_id: str) -> JobState:
        """Send a failed or cancelled job back to waiting with fresh attempts; returns the state it
        went to (WAITING_CHILDREN for a flow parent some of whose children have not ended). A parent
        waiting for children it adopted and never wrote (it ended in between) goes to WAITING
        instead, and runs again to add them; retrying such a parent left in WAITING_CHILDREN (the
        look-up after the script failed) does that look-up again."""
        from conveyor.flows.unwritten import rerun_if_children_unwritten

        code, state = await self.scripts.retry(job_id)
        if (state == JobState.WAITING_CHILDREN and code in (ScriptCode.OK, ScriptCode.WRONG_STATE)
                and await rerun_if_children_unwritten(self, job_id)):
            return JobState.WAITING
        self._check(code, job_id, state, "retry")
        return JobState(state)

    async def promote(self, job_id: str) -> None:
        """Make a delayed job ready now."""
        code, state = await self.scripts.promote(job_id)
        self._check(code, job_id, state, "promote")

    async def remove(self, job_id: str) -> None:
        """Delete a job that is not active (cancel an active job first)."""
        code, state = await self.scripts.remove(job_id)
        self._check(code, job_id, state, "remove")

    async def pause(self) -> None:
        await self.scripts.set_paused(True)

    async def resume(self) -> None:
        await self.scripts.set_paused(False)

    async def drain(self, *, include_delayed: bool = True) -> int:
        """Delete every waiting (and delayed) job, in bounded batches. Returns how many went."""
        total = await self._delete_all(self.keys.ready, "drained")
        total += await limits_admin.drain_groups(self, self._delete_all)
        for name in await self.held():
            total += await self._delete_all(self.keys.hold(name), "drained")
        if include_delayed:
            total += await self._delete_all(self.keys.delayed, "drained")
        return total

    async def purge(self, state: JobState | str) -> int:
        """Delete every finished job of one state (completed, failed or cancelled)."""
        state = JobState(state)
        if state not in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            raise InvalidOptionError("purge applies to completed, failed or cancelled jobs")
        return await self._delete_all(self.keys.state_set(state.value), "purged")

    async def obliterate(self, *, force: bool = False) -> None:
        """Delete the whole queue: jobs, events, settings. Refuses while jobs are active unless
        forced. The check and the first deletion are one atomic step, which also pauses the queue so
        nothing is leased while the rest goes in bounded batches (obliterate-15.lua)."""
        while True:
            code, remaining = await self.scripts.obliterate(force)
            if code == ScriptCode.QUEUE_ACTIVE:
                raise QueueNotEmptyError(f"queue {self.name!r} has {remaining} active jobs; pass force=True")
            if not remaining:
                break
        await self._call(self.client.srem(registry_key(self.prefix), self.name))
        self._registered = False

    async def recover_stalled(self, max_stalls: int = 1, max_lapses: int = 10) -> tuple[int, int]:
        """Return jobs whose lease expired to waiting, or fail those that stalled more than
        `max_stalls` times (or lapsed unconfirmed more than `max_lapses` times, see
        recover-stalled-8.lua). Workers run this periodically; returns (recovered, failed)."""
        return await self.scripts.recover_stalled(max_stalls, max_lapses=max_lapses)

    async def _delete_all(self, key: str, event: str) -> int:
        total = 0
        while True:
            deleted, remaining = await self.scripts.delete_jobs(key, 500, event)
            total += deleted
            if remaining == 0 or deleted == 0:
                return total

    async def set_retention(self, retention: Retention) -> None:
        """Limits on kept finished records, applied as jobs finish (bounded work per batch)."""
        def enc(v: float | None, scale: int = 1) -> str:
            return "-1" if v is None else str(int(v * scale))

        await self._call(self.client.hset(self.keys.meta, mapping={
            "completed_max_count": enc(retention.completed_max_count),
            "completed_max_age_ms": enc(retention.completed_max_age_s, 1000),
            "failed_max_count": enc(retention.failed_max_count),
            "failed_max_age_ms": enc(retention.failed_max_age_s, 1000),
            "completed_max_bytes": enc(retention.completed_max_bytes),
        }))

    async def completed_bytes(self) -> int:
        """What the completed records kept without a TTL count against `completed_max_bytes`."""
        return int(await self._call(self.client.hget(self.keys.meta, "completed_bytes")) or 0)

    # ------------------------------------------------------------------ limits (conveyor.limits)

    async def set_limits(
        self,
        *,
        rate: RateLimit | None = None,
        concurrency: int | None = None,
        cost: RateLimit | None = None,
        group_defaults: GroupLimits | None = None,
    ) -> None:
        """Replace the queue's fleet-wide limits (omitted = none); workers apply them at their next claim."""
        await limits_admin.set_limits(
            self, rate=rate, concurrency=concurrency, cost=cost, group_defaults=group_defaults
        )

    async def set_group_limits(
        self, group: str, *, concurrency: int | None = None, rate: RateLimit | None = None,
        cost: RateLimit | None = None,
    ) -> None:
        """Replace one group's overrides of the group defaults (omitted = use the default)."""
        await limits_admin.set_group_limits(self, group, concurrency=concurrency, rate=rate, cost=cost)

    async def set_group_weight(self, group: str, weight: float) -> None:
        await limits_admin.set_group_weight(self, group, weight)

    async def limits_state(self, max_groups: int = limits_admin.MAX_GROUPS_LISTED) -> dict[str, Any]:
        """Limits, tokens left, active counts, blocked-until and the group backlog (JSON-ready)."""
        return await limits_admin.limits_state(self, max_groups)

    async def stats(self) -> dict[str, Any]:
        """Counts per state, paused flag and the limits state in one JSON-ready dict."""
        counts = await self.counts()
        return {
            "queue": self.name,
            "counts": {str(s): n for s, n in counts.items()},
            "paused": await self.is_paused(),
            "limits": await self.limits_state(),
        }

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _check(code: int, job_id: str, state: str, operation: str) -> None:
        if code == ScriptCode.NOT_FOUND:
            raise JobNotFoundError(f"job {job_id!r} not found")
        if code == ScriptCode.WRONG_STATE:
            raise InvalidStateError(job_id, state, operation)

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        """One Redis call; every fault comes out as ConnectionFailedError (redis/faults.py)."""
        return await redis_call(awaitable)


def encode_spec(
    queue: str, spec: JobSpec, defaults: JobOptions, max_payload_bytes: int, middleware: MiddlewareChain
) -> JobSpecArgs:
    """One job validated and encoded for the add script (async and sync enqueue share this)."""
    check_job_name(spec.name)
    opts = spec.options.merged_over(defaults)
    opts.check_keyed()
    data = codec.dumps_canonical(spec.data)
    if len(data) > max_payload_bytes:
        raise PayloadTooLargeError(len(data), max_payload_bytes)
    stored = opts.stored()
    if middleware.propagators:
        for key, value in middleware.propagated(queue, spec).items():
            if key not in _OPTION_NAMES:  # a propagated value never stands in for a job option
                stored[key] = value
    ttl = opts.idempotency_ttl or DEFAULT_IDEMPOTENCY_TTL_S
    return JobSpecArgs(
        job_id=opts.job_id or "",
        idempotency_key=opts.idempotency_key or "",
        idempotency_ttl_ms=int(ttl * 1000),
        name=spec.name,
        data=data,
        opts=codec.dumps(stored).decode() if stored else "",
        priority=opts.priority or 0,
        delay_ms=opts.delay_ms(),
        group=opts.group or "",
        cost=opts.cost,
        keyed=opts.keyed(),
    )


def added_jobs(reply: Sequence[Any]) -> list[tuple[str, bool]]:
    """(job id, created) pairs from the add script's reply; raises on an idempotency conflict."""
    if reply and reply[0] == ScriptCode.CONFLICT:
        raise IdempotencyConflictError(str(reply[1]))
    return [(str(reply[i]), reply[i + 1] == 1) for i in range(0, len(reply), 2)]


def check_batch_duplicates(jobs: Sequence[JobSpecArgs]) -> None:
    """Two specs in one batch sharing an id or key must carry the same job, as across batches."""
    seen: dict[tuple[str, str], tuple[str, str | bytes]] = {}
    for j in jobs:
        for kind, value in (("id", j.job_id), ("key", j.idempotency_key)):
            if value:
                prev = seen.setdefault((kind, value), (j.name, j.data))
                if prev != (j.name, j.data):
                    raise IdempotencyConflictError(value)
