"""One exception tree for everything Conveyor raises, plus the control-flow signals handlers raise.

Script return codes map to exceptions through `ScriptCode` in `conveyor.redis.codes`; nothing else
in the library raises bare built-in exceptions for domain errors.
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Root of every error Conveyor raises."""


class ConfigurationError(ConveyorError):
    """Settings or declarations are invalid (unknown option, bad URL, duplicate task...)."""


class UnknownLimiterError(ConfigurationError, LookupError):
    """A task, queue or call named a limiter that was never declared."""


class UsageReportError(ConveyorError, ValueError):
    """Usage reported for a job is invalid (negative, absurd) or was reported twice."""


class InvalidJobError(ConveyorError, ValueError):
    """A job cannot be enqueued as given; nothing was written."""


class InvalidOptionError(InvalidJobError):
    """An unknown job option, or a known one with a value out of range."""


class SerializationError(InvalidJobError):
    """Data or a result is not JSON-serialisable."""


class PayloadTooLargeError(InvalidJobError):
    """Encoded data exceeds the queue's size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes, over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class PayloadValidationError(InvalidJobError):
    """Data does not match the task's declared payload type."""

    def __init__(self, task: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"payload for task {task!r} is invalid: {errors}")
        self.task = task
        self.errors = errors


class InvalidFlowError(InvalidJobError):
    """A flow tree refused before anything was written; `path` names the bad node ("root",
    "root.children[2].children[0]")."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


class IdempotencyConflictError(ConveyorError):
    """A job id or idempotency key was reused with different data."""

    def __init__(self, job_id: str, what: str = "name or data") -> None:
        super().__init__(f"job {job_id!r} already exists with different {what}")
        self.job_id = job_id


class FlowBusyError(IdempotencyConflictError):
    """A flow sent again while the cancellation of its earlier run (its root or a parent removed or
    cancelled) is still under way; nothing was written. Send it again shortly (docs/flows.md)."""

    def __init__(self, job_id: str) -> None:
        ConveyorError.__init__(self, f"the earlier run of flow node {job_id!r} is still being cancelled; "
                                     "nothing was written: send the flow again once that is done")
        self.job_id = job_id


class JobNotFoundError(ConveyorError, LookupError):
    """No job with that id exists (never did, or was removed). `ended`: how the job ended when a
    waiter saw it end before its record went (`result_ttl=0`, retention, removal), else None."""

    def __init__(self, message: str, *, ended: str | None = None) -> None:
        super().__init__(message)
        self.ended = ended


class InvalidStateError(ConveyorError):
    """The operation does not apply to the job in its current state."""

    def __init__(self, job_id: str, state: str, operation: str) -> None:
        super().__init__(f"cannot {operation} job {job_id!r} in state {state!r}")
        self.job_id = job_id
        self.state = state
        self.operation = operation


class RetiredLayoutError(InvalidStateError):
    """A retry that would move a job out of a previous partition layout to the current one, where
    another job holds its id."""

    def __init__(self, job_id: str, state: str, message: str) -> None:
        super().__init__(job_id, state, "retry")
        self.args = (message,)


class LeaseLostError(ConveyorError):
    """A write carried a lease token that is no longer current (the job was recovered elsewhere)."""


class SpoiledKeyError(ConveyorError):
    """A script met one of Conveyor's keys holding another Redis type than its own (edited by hand);
    the message names the key when it is one of the script's keys (redis/spoiled.py)."""


class SpoiledRecordError(SpoiledKeyError, InvalidJobError):
    """A job record read back holds a field of a shape Conveyor never writes (edited by hand): its
    `state` is not a job state. The data in Redis is at fault, not the caller (the API answers
    500 spoiled_key); an InvalidJobError too, as a read of such a record always raised."""


class QueueNotEmptyError(ConveyorError):
    """Obliterate refused because jobs are active; pass force=True to override."""


class ServerNotFoundError(ConfigurationError):
    """No REDIS_URL and no running embedded server in the project directory (see conveyor.discovery)."""


class MissingExtraError(ConveyorError, ImportError):
    """A feature needs an optional extra that is not installed (`pip install 'conveyor[<extra>]'`)."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs the {extra!r} extra ({missing} is not installed): "
                         f"pip install 'conveyor[{extra}]'")
        self.feature = feature
        self.extra = extra
        self.missing = missing


class ConnectionFailedError(ConveyorError, ConnectionError):
    """Redis/Valkey could not be reached or cannot serve now (see `conveyor.redis.faults`). The call
    may or may not have taken effect on the server."""


class DurabilityError(ConnectionFailedError):
    """A write was applied on the primary but not acknowledged by the replicas or the AOF fsync the
    queue's durability asks for, within its timeout: it may be lost if the primary fails now."""


class ScriptInputError(InvalidJobError):
    """A script refused its arguments before writing anything: a value out of range reached Redis
    (for an enqueue, a job that cannot be enqueued as given; the API answers 422)."""

    def __init__(self, script: str, position: int, reason: str) -> None:
        super().__init__(f"{script}: {reason} (refused, nothing written)")
        self.script = script
        self.position = position
        self.reason = reason


class EmbeddedServerError(ConveyorError):
    """The embedded Valkey server could not be started, reached or stopped."""


class UnknownTaskError(ConveyorError, LookupError):
    """No task or queue with that name is declared."""


class JobFailedError(ConveyorError):
    """Raised by `Job.result()` when the job ended failed; carries the recorded error."""

    def __init__(self, job_id: str, error: dict[str, Any] | None) -> None:
        message = (error or {}).get("message", "job failed")
        kind = (error or {}).get("type", "Error")
        super().__init__(f"job {job_id} failed: {kind}: {message}")
        self.job_id = job_id
        self.error = error or {}


class JobCancelledError(ConveyorError):
    """Raised by `Job.result()` when the job was cancelled."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


# --------------------------------------------------------------------------- handler signals


class JobInterrupted(BaseException):
    """Raised inside a sync handler's thread when the worker stops its run early (timeout, lost
    lease, cancellation, shutdown). A BaseException, so `except Exception` in a handler does not
    swallow it; `finally` blocks still run. Async handlers get `asyncio.CancelledError` instead."""


class HandlerSignal(Exception):
    """Base of the exceptions a handler raises to steer what happens to its job."""


class WaitForChildren(HandlerSignal):
    """Raised by `ctx.wait_for_children()`: the run ends without an outcome and the job runs again
    once its children have ended (the attempt is not counted)."""


class Retry(HandlerSignal):
    """Retry this job after `after` seconds (uses an attempt; None = the job's backoff)."""

    def __init__(self, after: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        if after is not None and after < 0:
            raise ValueError("Retry(after=...) must be >= 0")
        self.after = after
        self.reason = reason


class Unrecoverable(HandlerSignal):
    """Fail this job at once, skipping any attempts left (goes to the dead-letter set)."""


# The longest a RateLimited signal puts its job back and blocks its group or queue (the cap
# limits.http.raise_for_rate_limit puts on an upstream's Retry-After), and the wait of one that names
# no usable number of seconds (NaN, negative, not a number).
RATE_LIMITED_MAX_S = 3600.0
RATE_LIMITED_DEFAULT_S = 1.0


def rate_limited_wait(retry_after: object) -> float:
    """`retry_after` as a RateLimited signal waits: capped at RATE_LIMITED_MAX_S (inf included), or
    RATE_LIMITED_DEFAULT_S when unusable. A huge value would otherwise block claiming for years."""
    try:
        seconds = float(retry_after)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return RATE_LIMITED_DEFAULT_S
    if not seconds >= 0:  # NaN fails every comparison
        return RATE_LIMITED_DEFAULT_S
    return min(seconds, RATE_LIMITED_MAX_S)


class RateLimited(HandlerSignal):
    """An upstream said 'slow down': put the job back after `retry_after` s without using an attempt,
    and block claiming for the job's group (or the queue) as long. The wait is capped at one hour;
    NaN or a negative value waits the default second (`rate_limited_wait`)."""

    def __init__(self, retry_after: float, reason: str = "rate limited") -> None:
        super().__init__(reason)
        self.retry_after = rate_limited_wait(retry_after)
        self.reason = reason


class JobTimeoutError(ConveyorError, TimeoutError):
    """The handler ran past the job's timeout and was cancelled (a failed attempt)."""


class UnsafeURLError(ConveyorError, ValueError):
    """A URL a handler was asked to reach is refused by the SSRF guard (scheme or resolved address)."""


class NameResolutionError(ConveyorError, OSError):
    """A host name could not be resolved just now (a temporary DNS failure such as EAI_AGAIN): retried."""


# --------------------------------------------------------------------------- schedules


class InvalidScheduleError(ConveyorError, ValueError):
    """A schedule definition is invalid (bad cron expression, time zone, interval...); nothing was written."""


class ScheduleNotFoundError(ConveyorError, LookupError):
    """No schedule with that id exists."""


class BrokenScheduleError(SpoiledKeyError):
    """A stored schedule definition cannot be read (edited by hand: not JSON, a bad cron, an interval
    out of range). The data in Redis is at fault, not the call: the message names the schedule, and
    writing the schedule again (PUT, a code sync) repairs it."""
