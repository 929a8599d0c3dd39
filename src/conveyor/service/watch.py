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
    """Watches one Worker's loops; a loop ending while the worker is not closing is a crash. Each
    loop has its own restart backoff (as a bare Worker's own restarts): a crash of one loop neither
    delays nor resets another's."""

    def __init__(self, worker: QueueWorker, metrics: Metrics, *, backoff_max_s: float) -> None:
        self.worker = worker
        worker.self_healing = False  # this watch restarts its loops (with metrics) instead
        self.metrics = metrics
        self.backoff_max_s = backoff_max_s
        self.restarts = 0
        self.dead: set[str] = set()
        self.last_error: str | None = None
        self._streaks: dict[str, tuple[int, float]] = {}  # loop -> (crashes in a row, its last restart)
        self._timers: dict[str, tuple[asyncio.Task[None], float]] = {}  # dead loop -> (its timer, its delay)

    @property
    def healthy(self) -> bool:
        return not self.dead

    def _delay(self, name: str) -> float:
        """The next delay of loop `name`. Calm is counted from its restart, not from the crash before
        it: a backoff past CALM_AFTER_S would otherwise reset a loop that crashes at once."""
        count, restarted = self._streaks.get(name, (0, 0.0))
        if time.monotonic() - restarted > CALM_AFTER_S:
            count = 0
        self._streaks[name] = (count + 1, restarted)
        # The exponent is capped: 2**1024 does not fit a float, and a loop may crash for hours.
        return min(self.backoff_max_s, FIRST_DELAY_S * 2.0 ** min(count, MAX_DOUBLINGS))

    def _crashed(self, queue: str, name: str, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        self.last_error = f"{name}: {type(exc).__name__}: {exc}" if exc else f"{name}: stopped"
        logger.error("queue %s: %s loop crashed (%s)", queue, name, self.last_error, exc_info=exc)
        self.dead.add(name)
        delay = self._delay(name)
        self._timers[name] = (asyncio.create_task(asyncio.sleep(delay)), delay)

    def _restart(self, queue: str, name: str, delay: float) -> None:
        self.worker.restart_loop(name)
        self.restarts += 1
        self.metrics.loop_restarts.labels(queue, name).inc()
        logger.warning("queue %s: restarted the %s loop (restart %d, after %.3f s)", queue, name,
                       self.restarts, delay)
        count, _ = self._streaks.get(name, (0, 0.0))
        self._streaks[name] = (count, time.monotonic())
        self.dead.discard(name)

    async def run(self) -> None:
        queue = self.worker.queue.name
        try:
            while True:
                tasks = self.worker.loop_tasks
                live = {name: task for name, task in tasks.items() if name not in self.dead}
                waits = [*live.values(), *(timer for timer, _ in self._timers.values())]
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for name, task in live.items():
                    if task.done():
                        self._crashed(queue, name, task)
                for name, (timer, delay) in list(self._timers.items()):
                    if timer.done():
                        del self._timers[name]
                        self._restart(queue, name, delay)
                self.metrics.loop_up.labels(queue).set(0 if self.dead else 1)
        finally:
            for timer, _ in self._timers.values():
                timer.cancel()
            self._timers.clear()
