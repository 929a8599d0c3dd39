"""Worker room: claim loop, concurrency, leases and heartbeat, stalled sweep, shutdown."""

from conveyor.worker.context import JobContext
from conveyor.worker.outcome import JobOutcome, OutcomeKind
from conveyor.worker.runner import Handler
from conveyor.worker.worker import Worker, WorkerStats

__all__ = ["Handler", "JobContext", "JobOutcome", "OutcomeKind", "Worker", "WorkerStats"]
