"""Request and response bodies as the OpenAPI document shows them.

Enqueue bodies are parsed by hand (malformed JSON is a 400, unknown task a 404, bad data a 422
with field errors); the request models below document them, and `openapi.py` adds each task's
payload schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from conveyor.backoff import BACKOFF_SECONDS_MAX, FACTOR_MAX
from conveyor.job import JobState
from conveyor.options import ATTEMPTS_MAX, COST_MAX, MAX_DURATION_S, MIN_DURATION_S, PRIORITY_MAX, PRIORITY_MIN

MAX_BULK = 1000


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. not_found, validation_error.")
    message: str
    details: list[dict[str, Any]] | None = Field(None, description="Field errors (loc, msg, type), when any.")


class ErrorOut(BaseModel):
    error: ErrorDetail


_ID_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,200}$"


class FixedBackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["fixed"]
    delay: float = Field(ge=0, le=BACKOFF_SECONDS_MAX)


class ExponentialBackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["exponential"]
    base: float = Field(1.0, ge=0, le=BACKOFF_SECONDS_MAX)
    factor: float = Field(2.0, ge=1, le=FACTOR_MAX)
    max: float = Field(3600.0, ge=0, le=BACKOFF_SECONDS_MAX)
    jitter: bool = True


class NamedBackoffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["named"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$", description="A policy the app registers.")


class JobOptionsIn(BaseModel):
    """Per-job options; unset ones come from the task's and queue's defaults. The ranges are those
    `conveyor.options.JobOptions` enforces (durations up to 100 years)."""

    model_config = ConfigDict(extra="forbid")
    job_id: str | None = Field(
        None, pattern=_ID_PATTERN, description="Custom id; reusing it with the same body returns the same job."
    )
    idempotency_key: str | None = Field(None, pattern=_ID_PATTERN, description="Same as the Idempotency-Key header.")
    idempotency_ttl: float | None = Field(
        None, ge=MIN_DURATION_S, le=MAX_DURATION_S, description="Seconds the key is remembered (default 1 day)."
    )
    priority: int | None = Field(None, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="Higher runs first.")
    delay: float | None = Field(None, ge=0, le=MAX_DURATION_S, description="Seconds before the job becomes ready.")
    run_at: str | None = Field(None, max_length=64, description="ISO 8601 time with offset; alternative to delay.")
    attempts: int | None = Field(None, ge=1, le=ATTEMPTS_MAX)
    backoff: (
        Annotated[float, Field(ge=0, le=BACKOFF_SECONDS_MAX)]
        | Literal["exponential"]
        | FixedBackoffIn
        | ExponentialBackoffIn
        | NamedBackoffIn
        | None
    ) = Field(None, description="Seconds between attempts, \"exponential\", or a backoff object.")
    timeout: float | None = Field(None, ge=MIN_DURATION_S, le=MAX_DURATION_S, description="Seconds a run may take.")
    result_ttl: float | None = Field(None, ge=0, le=MAX_DURATION_S, description="Seconds the completed record is kept.")
    failed_ttl: float | None = Field(
        None, ge=MIN_DURATION_S, le=MAX_DURATION_S, description="Seconds the failed record is kept."
    )
    group: str | None = Field(None, pattern=_ID_PATTERN)
    cost: int | None = Field(None, ge=0, le=COST_MAX)
    key: str | None = Field(
        None, pattern=_ID_PATTERN,
        description="Keyed job: what a newer job with the same key does is set by key_mode (docs/llm.md).",
    )
    key_mode: Literal["debounce", "throttle", "latest"] | None = Field(
        None,
        description="debounce: a newer job replaces this one while it waits, and each waits key_window; "
        "throttle: jobs of the key start at least key_window apart, and an add while one waits returns it; "
        "latest: a newer job cancels the queued and the running job of the key.",
    )
    key_window: float | None = Field(
        None, gt=0, le=86400, description="Seconds (debounce and throttle; latest takes none)."
    )


class EnqueueIn(BaseModel):
    """One job: the task name, its payload and options."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="A task declared on this queue.")
    data: Any = Field(None, description="The task's payload; validated against its declared type.")
    options: JobOptionsIn | None = None


class BulkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: list[EnqueueIn] = Field(min_length=1, max_length=MAX_BULK)


class EnqueuedOut(BaseModel):
    id: str
    queue: str
    state: JobState
    created: bool = Field(description="False when an idempotent retry returned an existing job.")
    status_url: str
    events_url: str


class FlowStartedOut(BaseModel):
    id: str = Field(description="The root job's id.")
    queue: str = Field(description="The root job's queue.")
    status_url: str
    events_url: str = Field(description="The root's event stream, which also reports its children's states.")


class JobRefOut(BaseModel):
    queue: str
    id: str


class ChildOut(BaseModel):
    queue: str
    id: str
    name: str | None = Field(None, description="Null when the child's record is gone.")
    state: JobState | None = Field(None, description="Null when the child's record is gone.")


class BulkOut(BaseModel):
    jobs: list[EnqueuedOut]


class JobOut(BaseModel):
    id: str
    queue: str
    name: str
    state: JobState
    data: Any = Field(None, description="Payload; null unless the key has the read-data scope.")
    result: Any = Field(None, description="Return value; null unless the key has the read-data scope.")
    data_hidden: bool = Field(description="True when data and result were withheld (no read-data scope).")
    progress: Any = None
    error: dict[str, Any] | None = Field(
        None, description="Last error: type, message, attempt; the stack only for admin keys."
    )
    attempts_made: int
    max_attempts: int
    priority: int
    stalls: int = Field(description="Leases that expired while a worker was running the job.")
    lapses: int = Field(0, description="Leases that expired before any worker confirmed running the job.")
    awaiting_handler: bool = Field(
        False, description="Waiting for a worker that has a handler for its name (a rolling deploy)."
    )
    options: dict[str, Any]
    created_ms: int | None
    started_ms: int | None
    finished_ms: int | None
    due_ms: int | None = Field(None, description="A delayed job: when it becomes ready (epoch ms, Redis clock).")
    next_attempt_ms: int | None = Field(
        None, description="A delayed job that has run before (a retry waiting out its backoff): when it is "
        "attempted next. Null otherwise.",
    )
    worker: str | None
    cancel_requested: bool
    idempotency_key: str | None
    parent: JobRefOut | None = Field(None, description="A flow child's parent job; null otherwise.")
    children: list[ChildOut] = Field(
        default_factory=list, description="A flow parent's children in the order given, with their states.")


class JobPageOut(BaseModel):
    jobs: list[JobOut]
    next_cursor: int | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class JobActionOut(BaseModel):
    id: str
    queue: str
    state: JobState = Field(description="State after the action (active = cancellation requested).")


class ThroughputOut(BaseModel):
    window_s: int
    completed: int
    failed: int


class QueueOut(BaseModel):
    name: str
    declared: bool | None = Field(
        True,
        description="False for a queue found in Redis that this app does not declare; null where no app is "
        "loaded (the CLI).",
    )
    paused: bool
    counts: dict[str, int]
    throughput: ThroughputOut
    tasks: list[str]
    limits: dict[str, Any] = Field(
        description="Limits and their live state: rate/cost tokens left, fleet-wide active count, "
        "blocked-until (upstream backpressure), group backlog (see docs/limits.md)."
    )


class QueuesOut(BaseModel):
    queues: list[QueueOut]


class PausedOut(BaseModel):
    name: str
    paused: bool


class RetryAllOut(BaseModel):
    queue: str
    retried: int
    remaining: int


class PurgeOut(BaseModel):
    queue: str
    purged: int


class WorkerOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    host: str | None = None
    pid: int | None = None
    queues: list[str] = Field(default_factory=list)
    concurrency: int | dict[str, int] | None = None  # the worker service writes slots per queue
    version: str | None = None
    started_ms: int | None = None
    last_beat_ms: int | None = None
    counts: dict[str, Any] = Field(default_factory=dict)


class WorkersOut(BaseModel):
    workers: list[WorkerOut]


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: Literal["ok", "unreachable"]
    version: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can return."""
    text = {
        400: "Malformed request",
        401: "Missing or unknown API key",
        403: "Key lacks the scope",
        404: "Unknown queue, task or job",
        409: "Conflict",
        413: "Body too large",
        422: "Invalid parameters or payload",
        429: "Rate limited (see Retry-After)",
        500: "Internal error",
        503: "Redis unreachable",
    }
    return {s: {"model": ErrorOut, "description": text[s]} for s in statuses}
