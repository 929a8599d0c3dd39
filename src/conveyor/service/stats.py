"""Per-queue and process-wide figures for /health, the periodic stats line and the exit summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from conveyor.partitions import QueueWorker
from conveyor.worker import WorkerStats


def success_rate(succeeded: int, failed: int) -> float | None:
    """Share of finished jobs that succeeded (retries still pending are not counted)."""
    done = succeeded + failed
    return None if done == 0 else round(succeeded / done, 4)


def queue_counts(worker: QueueWorker) -> dict[str, Any]:
    s: WorkerStats = worker.stats
    return {
        "processed": s.processed,
        "succeeded": s.succeeded,
        "failed": s.failed,
        "retried": s.retried,
        "cancelled": s.cancelled,
        "returned": s.returned,
        "active": worker.active,
        "peak_active": s.peak_active,
        "concurrency": worker.concurrency,
        "success_rate": success_rate(s.succeeded, s.failed),
        "last_heartbeat": s.last_heartbeat,
    }


@dataclass(slots=True)
class ProcessPeak:
    """Most jobs running at once across all queues of the process."""

    active: int = 0
    peak: int = 0

    def started(self) -> None:
        self.active += 1
        if self.active > self.peak:
            self.peak = self.active

    def finished(self) -> None:
        self.active -= 1


@dataclass(slots=True)
class RateWindow:
    """Jobs per minute since the previous stats line, per queue."""

    last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def per_minute(self, queue: str, processed: int) -> float:
        now = time.monotonic()
        then, before = self.last.get(queue, (now, processed))
        self.last[queue] = (now, processed)
        elapsed = now - then
        return 0.0 if elapsed <= 0 else round((processed - before) * 60 / elapsed, 1)


def summary(workers: dict[str, QueueWorker], uptime_s: float, peak: int) -> dict[str, Any]:
    stats = [w.stats for w in workers.values()]
    processed = sum(s.processed for s in stats)
    succeeded = sum(s.succeeded for s in stats)
    failed = sum(s.failed for s in stats)
    return {
        "uptime_s": round(uptime_s, 1),
        "processed": processed,
        "succeeded": succeeded,
        "failed": failed,
        "retried": sum(s.retried for s in stats),
        "returned": sum(s.returned for s in stats),
        "success_rate": success_rate(succeeded, failed),
        "peak_concurrency": peak,
        "jobs_per_min": round(processed * 60 / uptime_s, 1) if uptime_s > 0 else 0.0,
    }
