"""Job states, the frozen record read from Redis, and the live `Job` handle."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from conveyor import codec
from conveyor.errors import JobCancelledError, JobFailedError, JobNotFoundError, SpoiledRecordError

if TYPE_CHECKING:
    from conveyor.queue import Queue

T = TypeVar("T")


class JobState(StrEnum):
    WAITING = "waiting"
    DELAYED = "delayed"
    ACTIVE = "active"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING_CHILDREN = "waiting-children"  # a flow parent waiting for its children to end (docs/flows.md)


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})


# The fields of a job hash its record reads (JobRecord.from_hash). Readers ask for these alone: a flow
# parent's hash also keeps every child's result and error (`r:<child>`, `e:<child>`) until the parent
# runs, which only its handler reads (Queue.children); a whole-hash read of such a parent moved every
# child's result each time the job was shown.
RECORD_FIELDS = ("name", "data", "state", "opts", "prio", "attempts", "stalls", "lapses", "held", "progress",
                 "result", "error", "ts", "started", "finished", "worker", "cancel", "idem", "parent", "kids",
                 "pending")


def record_fields(values: Sequence[str | None]) -> dict[str, str]:
    """The hash `from_hash` takes, from an HMGET of RECORD_FIELDS (empty: no such job)."""
    return {name: value for name, value in zip(RECORD_FIELDS, values, strict=True) if value is not None}


def _int(raw: str | None) -> int | None:
    return None if raw is None else _count(raw, None)


# A record is data: one edited by hand (or written by another client) must not make reading it, or
# a page of records it is on, fail. A field that cannot be read is shown as what it holds or as its
# default; only a state that is not a state is refused (a page knows the state from its set).
def _count(raw: Any, default: Any) -> Any:
    try:
        return int(raw)
    except (TypeError, ValueError):
        try:
            return int(float(raw))  # '1e+23', as Lua writes a count past 2**53
        except (TypeError, ValueError, OverflowError):
            return default


def _json(raw: str | None) -> Any:
    try:
        return codec.loads(raw)
    except ValueError:
        return raw  # not JSON: the text as stored


def stored_state(raw: str | None, queue: str, job_id: str) -> JobState:
    """A record's `state` field; SpoiledRecordError naming the job when it holds no job state."""
    try:
        return JobState(raw or "waiting")
    except ValueError:
        raise SpoiledRecordError(
            f"job {job_id[:200]!r} of queue {queue!r}: its record's state field holds {str(raw)[:100]!r}, "
            "not a job state (edited by hand?); repair or delete the record"
        ) from None


def _state(raw: str | None, queue: str, job_id: str, hint: JobState | None) -> JobState:
    if hint is not None:
        try:
            return JobState(raw or "waiting")
        except ValueError:
            return hint
    return stored_state(raw, queue, job_id)


@dataclass(frozen=True, slots=True)
class JobOutput:
    """A job's streamed output as stored at one moment (JobContext.stream): the text of one attempt
    (`attempt`, 0 when nothing was streamed), its size in UTF-8 bytes, and whether chunks were dropped
    at the size limit."""

    text: str
    attempt: int
    size: int
    truncated: bool


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored at one moment. Times are epoch milliseconds from the Redis clock."""

    id: str
    queue: str
    name: str
    data: Any
    state: JobState
    options: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    attempts_made: int = 0
    max_attempts: int = 1
    stalls: int = 0  # leases that expired while a worker was running the job (see docs/reliability.md)
    lapses: int = 0  # leases that expired before any worker confirmed running it
    awaiting_handler: bool = False  # waiting for a worker that has a handler for its name
    progress: Any = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_ms: int | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    worker: str | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    parent: tuple[str, str] | None = None  # (queue, id) of a flow child's parent
    children: tuple[tuple[str, str], ...] = ()  # (queue, id) of a flow parent's children, in order
    pending_children: int = 0  # children that have not ended (a flow parent)

    @classmethod
    def from_hash(
        cls, queue: str, job_id: str, h: Mapping[str, str], state: JobState | None = None
    ) -> JobRecord:
        """The record of hash `h`; `state`: the state of the set the id was read from, used when the
        stored one is not a state (otherwise that raises SpoiledRecordError, an InvalidJobError).
        Other unreadable fields are shown as stored (text that is not JSON) or as their defaults."""
        options = _json(h.get("opts"))
        if not isinstance(options, dict):
            options = {}
        error = _json(h.get("error"))
        if error is not None and not isinstance(error, dict):
            error = {"type": "Unreadable", "message": str(error)[:2000]}
        return cls(
            id=job_id,
            queue=queue,
            name=h.get("name", ""),
            data=_json(h.get("data")),
            state=_state(h.get("state"), queue, job_id, state),
            options=options,
            priority=_count(h.get("prio", 0), 0),
            attempts_made=_count(h.get("attempts", 0), 0),
            max_attempts=_count(options.get("attempts", 1), 1),
            stalls=_count(h.get("stalls", 0), 0),
            lapses=_count(h.get("lapses", 0), 0),
            awaiting_handler="held" in h,
            progress=_json(h.get("progress")),
            result=_json(h.get("result")),
            error=error,
            created_ms=_int(h.get("ts")),
            started_ms=_int(h.get("started")),
            finished_ms=_int(h.get("finished")),
            worker=h.get("worker"),
            cancel_requested=h.get("cancel") == "1",
            idempotency_key=h.get("idem"),
            parent=split_ref(h["parent"]) if "parent" in h else None,
            children=tuple(split_ref(r) for r in h.get("kids", "").split()),
            pending_children=_count(h.get("pending", 0), 0),
        )

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "queue": self.queue, "name": self.name, "data": self.data,
            "state": self.state.value, "options": self.options, "priority": self.priority,
            "attempts_made": self.attempts_made, "max_attempts": self.max_attempts, "stalls": self.stalls,
            "lapses": self.lapses, "awaiting_handler": self.awaiting_handler,
            "progress": self.progress, "result": self.result, "error": self.error,
            "created_ms": self.created_ms, "started_ms": self.started_ms, "finished_ms": self.finished_ms,
            "worker": self.worker, "cancel_requested": self.cancel_requested,
            "idempotency_key": self.idempotency_key,
            "parent": None if self.parent is None else {"queue": self.parent[0], "id": self.parent[1]},
            "children": [{"queue": q, "id": i} for q, i in self.children],
        }


def split_ref(ref: str) -> tuple[str, str]:
    """(queue, id) of a flow reference "<queue>:<id>" (queue names hold no ':')."""
    queue, _, job_id = ref.partition(":")
    return queue, job_id


class Job(Generic[T]):
    """A live handle: a job id bound to its queue. Reads go to Redis each time."""

    __slots__ = ("_parse", "created", "id", "queue")

    def __init__(self, queue: Queue, job_id: str, *, created: bool = True, parse: Any = None) -> None:
        self.queue = queue
        self.id = job_id
        self.created = created  # False when an idempotent add returned an existing job
        self._parse = parse

    def __repr__(self) -> str:
        return f"Job(queue={self.queue.name!r}, id={self.id!r})"

    async def record(self) -> JobRecord:
        rec = await self.queue.get_job(self.id)
        if rec is None:
            raise JobNotFoundError(f"job {self.id!r} not found in queue {self.queue.name!r}")
        return rec

    async def state(self) -> JobState:
        return (await self.record()).state

    async def logs(self) -> list[str]:
        return await self.queue.get_logs(self.id)

    async def cancel(self) -> JobState:
        return await self.queue.cancel(self.id)

    async def wait(self, timeout: float | None = None) -> JobRecord:
        """Wait until the job is completed, failed or cancelled; TimeoutError after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        cursor = await self.queue.last_event_id()
        ended: str | None = None  # the end event seen for the job, if any
        while True:
            try:
                rec = await self.record()
            except JobNotFoundError:
                if ended is None:
                    raise
                raise JobNotFoundError(
                    f"job {self.id!r} of queue {self.queue.name!r} was {ended}, and its record was not kept "
                    "(result_ttl=0, retention or removal)", ended=ended) from None
            if rec.finished:
                return rec
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"job {self.id} did not finish within {timeout} s")
            block_s = 1.0 if remaining is None else min(1.0, remaining)
            # Events wake us early; the record is re-read at least once a second in case the event was
            # trimmed from the stream before we read it.
            until = time.monotonic() + block_s
            seen = False
            while not seen and time.monotonic() < until:
                events = await self.queue.read_events(cursor, block_ms=max(1, int((until - time.monotonic()) * 1000)))
                if not events:
                    break
                cursor = events[-1].id
                ends = [e.type for e in events if e.job_id == self.id and e.type in _END_EVENTS]
                if ends:
                    seen, ended = True, ends[-1]

    async def result(self, timeout: float | None = None) -> T:
        """The handler's return value; raises JobFailedError / JobCancelledError / TimeoutError."""
        try:
            rec = await self.wait(timeout)
        except JobNotFoundError:
            raise
        if rec.state is JobState.FAILED:
            raise JobFailedError(self.id, rec.error)
        if rec.state is JobState.CANCELLED:
            raise JobCancelledError(self.id)
        value = rec.result
        return self._parse(value) if self._parse is not None else value  # type: ignore[no-any-return]


_END_EVENTS = frozenset({"completed", "failed", "cancelled", "removed"})

