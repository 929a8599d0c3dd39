"""The stalled-job sweep of one worker: returns the jobs of dead workers to the queue, fails those
that stalled too often, and ends the waits of jobs no worker has a handler for."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from conveyor.errors import ConnectionFailedError
from conveyor.worker.pump import backoff_delay
from conveyor.worker.settings import seconds_ms

if TYPE_CHECKING:
    from conveyor.worker.worker import Worker

logger = logging.getLogger(__name__)
PROBE_EVERY_TURNS = 8  # an idle queue sharing a pacer is probed on every 8th paced sweep (a claim costs more)


class StallSweeper:
    """Reads the worker's settings and state as they are at each sweep (a supervisor may restart it)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def run(self) -> None:
        """Every `stalled_interval_s`, returns the jobs of dead workers to the queue. While this
        worker holds no lease and ran nothing since the last sweep, the sweep waits for a turn of
        the pacer, so idle queues cost a bounded number of calls per second."""
        w = self.worker
        failures = 0
        turns = 0
        processed = w.stats.processed
        while True:
            await asyncio.sleep(min(w.stalled_interval_s, backoff_delay(failures)) if failures
                                else w.stalled_interval_s)
            if not w.leases and processed == w.stats.processed:
                await w.pacer.turn()
                turns += 1
                if w.pacer.limited:
                    w.mover.kick.set()  # the outbox look of an idle queue (flows/mover.py)
                    if turns % PROBE_EVERY_TURNS == 0 and w.pump.idle.is_set():
                        w.pump.wake()  # the idle queue's safety-net probe (see _waker)
            processed = w.stats.processed
            try:
                sweep = await w.queue.scripts.sweep(w.max_stalls, w.max_lapses)
                expired = 0
                if sweep.held:
                    expired = await w.queue.scripts.expire_held(seconds_ms(w.no_handler_timeout_s, 1))
                failures = 0
            except ConnectionFailedError as exc:
                failures += 1
                logger.warning("queue %s: stalled-job sweep failed (%s)", w.queue.name, exc)
                continue
            if sweep.recovered or sweep.failed:
                logger.warning(
                    "queue %s: recovered %d job(s) whose lease expired, failed %d that stalled too often",
                    w.queue.name, sweep.recovered, sweep.failed,
                )
            if sweep.orphans:
                logger.warning("queue %s: removed %d id(s) from the active set whose job record was gone "
                               "(deleted while leased)", w.queue.name, sweep.orphans)
            if expired:
                logger.warning("queue %s: failed %d job(s) that no worker had a handler for within %.0f s",
                               w.queue.name, expired, w.no_handler_timeout_s)
