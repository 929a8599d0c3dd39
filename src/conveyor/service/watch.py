"""Restarts a queue worker's crashed loops with exponential backoff, counting each restart."""

from __future__ import annotations

import asyncio
import logging
import time

from conveyor.partitions import QueueWorker
from conveyor.service.metrics import Metrics

logger = logging.getLogger(__name__)
FIRST_DELAY_S = 0.5
MAX_DOUBLINGS = 30  # 0.5 s * 2**30: far past any sensible CONVEYOR_RESTART_BACKOFF_MAX_S
CALM_AFTER_S = 60.0  # a loop that ran this long since its restart without crashing starts its backoff afresh


class QueueWatch:
    """Watches one Worker's loops; a loop ending while the worker is not closing is a crash."""

    def __init__(self, worker: QueueWorker, metrics: Metrics, *, backoff_max_s: float) -> None:
        self.worker = worker
        worker.self_healing = False  # this watch restarts its loops (with metrics) instead
        self.metrics = metrics
        self.backoff_max_s = backoff_max_s
        self.restarts = 0
        self.dead: set[str] = set()
        self.last_error: str | None = None
        self._streak = 0
        self._last_restart = 0.0

    @property
    def healthy(self) -> bool:
        return not self.dead

    async def run(self) -> None:
        queue = self.worker.queue.name
        while True:
            tasks = self.worker.loop_tasks
            await asyncio.wait(list(tasks.values()), return_when=asyncio.FIRST_COMPLETED)
            crashed = {name: task for name, task in tasks.items() if task.done()}
            for name, task in crashed.items():
                exc = None if task.cancelled() else task.exception()
                self.last_error = f"{name}: {type(exc).__name__}: {exc}" if exc else f"{name}: stopped"
                logger.error("queue %s: %s loop crashed (%s)", queue, name, self.last_error, exc_info=exc)
            self.dead = set(crashed)
            self.metrics.loop_up.labels(queue).set(0)
            # Calm is counted from the restart, not from the crash before it: a backoff past
            # CALM_AFTER_S would otherwise reset a loop that crashes at once back to the first delay.
            if time.monotonic() - self._last_restart > CALM_AFTER_S:
                self._streak = 0
            # The exponent is capped: 2**1024 does not fit a float, and a loop may crash for hours.
            delay = min(self.backoff_max_s, FIRST_DELAY_S * 2 ** min(self._streak, MAX_DOUBLINGS))
            self._streak += 1
            await asyncio.sleep(delay)
            for name in crashed:
                self.worker.restart_loop(name)
                self.restarts += 1
                self.metrics.loop_restarts.labels(queue, name).inc()
                logger.warning("queue %s: restarted the %s loop (restart %d, after %.3f s)", queue, name,
                               self.restarts, delay)
            self._last_restart = time.monotonic()
            self.dead = set()
            self.metrics.loop_up.labels(queue).set(1)
