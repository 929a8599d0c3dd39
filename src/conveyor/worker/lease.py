"""The owner of one lease, from the trip that leased the job to the trip that recorded its outcome.

The heartbeat (keeper.py), the pump (pump.py), the runner and shutdown all read and change a lease
only through this object; nothing else in the worker keeps per-job state. A lease ends in exactly one
way: an outcome acknowledged by Redis (recorded, or refused as lost), or dropped when Redis says it
was lost. Its life:

    leased -> running (handler code started) -> ended (outcome known, waiting for a trip)
           -> sent (in a trip) -> acknowledged (removed from the table)

A lease holds a concurrency slot until it ends, which for a sync handler means until its thread has
really returned. The heartbeat extends every lease in the table, ended ones included, so an outcome
waiting for Redis to come back does not let its lease lapse.
"""

from __future__ import annotations

import asyncio
import time
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.limits.named import Usage
    from conveyor.worker.context import JobContext

STOP_GRACE_S = 5.0  # how long a run may take to end once stopped (or past its timeout) before it is overdue
_TIMEOUT_NOTES = ("JobTimeoutError", "TimeoutError", "ReadTimeout", "ConnectTimeout", "WriteTimeout", "PoolTimeout")


class Stop(Enum):
    """Why the worker ends a run before its handler returns."""

    CANCEL = "cancellation requested"
    TIMEOUT = "timeout"
    SHUTDOWN = "worker shutdown"
    LOST = "lease lost"


class Lease:
    """One leased job (see the module docstring). `outcome` is its finish-10.lua arguments (id, token,
    kind, payload, number, note, cost) once the run has ended."""

    __slots__ = (
        "attempt", "cancel_requested", "confirmed", "ctx", "interrupt", "job_id", "name", "options", "outcome",
        "overdue", "signal", "started", "started_at", "stop", "stop_at", "task", "thread", "token", "usage",
    )

    def __init__(self, job_id: str, token: str, attempt: int, name: str, options: dict[str, Any]) -> None:
        self.job_id = job_id
        self.token = token
        self.attempt = attempt
        self.name = name
        self.options = options
        self.ctx: JobContext | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = False  # handler code began (the heartbeat then confirms the run in Redis)
        self.confirmed = False  # a heartbeat marked the run as started in Redis
        self.started_at: float | None = None  # time.monotonic() when a sync handler's thread began
        self.thread: int | None = None  # ident of the thread running a sync handler, while it runs
        self.interrupt: Any = None  # how to interrupt that thread (SyncThreads.interrupt)
        self.stop: Stop | None = None
        self.stop_at: float | None = None  # time.monotonic() when `stop` was first set
        self.overdue = False  # the heartbeat warned that this run does not end (see overdue_since)
        self.cancel_requested = False
        self.outcome: tuple[str, str, str, Any, int, str, Any] | None = None
        self.usage: Usage | None = None  # tokens the run reported (named limiters, cost accounting)
        self.signal = ("err", 0)  # what the run tells an adaptive limiter: ok | 429 | timeout | err, retry ms

    def __repr__(self) -> str:
        return f"Lease(id={self.job_id!r}, token={self.token!r}, stop={self.stop}, ended={self.outcome is not None})"

    @property
    def running(self) -> bool:
        return self.outcome is None

    def end(self, kind: str, payload: Any, number: int, note: str) -> None:
        """The run is over: keep what the next trip sends, and let the context and the task go (the
        lease and its context refer to each other; breaking that here frees them without the GC)."""
        ctx = self.ctx
        cost = "" if ctx is None or ctx.cost_used is None else ctx.cost_used
        self.outcome = (self.job_id, self.token, kind, payload, number, note, cost)
        if ctx is not None:
            self.usage = ctx.usage
        self.signal = limiter_signal(kind, number, note, self.stop)
        self.ctx = None
        self.task = None

    def overdue_since(self, now: float) -> str | None:
        """What this still-running run should have ended after, when it is over STOP_GRACE_S late:
        stopped (cancelled, lease lost, shutdown) or past its `timeout`, and its handler has not
        returned (it catches CancelledError or JobInterrupted, or is stuck in a call)."""
        if self.outcome is not None:
            return None
        if self.stop_at is not None and self.stop is not None:
            if now - self.stop_at > STOP_GRACE_S:
                return f"it was stopped ({self.stop.value}) {now - self.stop_at:.0f} s ago"
            return None
        timeout = self.options.get("timeout")
        if timeout and self.started_at is not None and now - self.started_at - timeout > STOP_GRACE_S:
            return f"its timeout of {timeout} s ran out {now - self.started_at - timeout:.0f} s ago"
        return None

    def request_stop(self, reason: Stop) -> None:
        """End the run early: cancel an async handler's task, interrupt a sync handler's thread.
        A lost lease overrides any other reason (there is nothing left to write)."""
        if self.outcome is not None:
            return
        if self.stop is not None:
            if reason is Stop.LOST:
                self.stop = reason
            return
        self.stop = reason
        self.stop_at = time.monotonic()
        if self.interrupt is not None:
            self.interrupt(self)
        elif self.task is not None:
            self.task.cancel()


def limiter_signal(kind: str, number: int, note: str, stop: Stop | None) -> tuple[str, int]:
    """What an ended run tells the adaptive limit of its named limiters: ('429', retry-after ms) for
    a RateLimited run (kind T), ('timeout', 0) for a run that timed out, ('ok', 0) for a completed one."""
    if kind == "T":
        return ("429", max(0, number))
    if stop is Stop.TIMEOUT or (kind in ("R", "F") and note.startswith(_TIMEOUT_NOTES)):
        return ("timeout", 0)
    if kind == "C":
        return ("ok", 0)
    return ("err", 0)
