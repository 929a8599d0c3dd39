"""The lease keeper: the one loop that renews leases (BullMQ's LockManager has the same job).

Every `interval_s` it extends every lease the worker still holds — running, ended and waiting for a
trip, or in a trip — in one call, confirms in Redis the runs whose handler started since the last
beat (a lapse of a confirmed run is a stall, see recover-stalled-8.lua), and tells leases what Redis
says about them: cancellation requested, or lost. It sleeps a full interval between calls, whatever
happens (closing, faults), so it can never spin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from conveyor.errors import ConnectionFailedError
from conveyor.redis.scripts import QueueScripts
from conveyor.worker.lease import Lease, Stop

if TYPE_CHECKING:
    from conveyor.limits.gate import LimiterGate

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self, scripts: QueueScripts, queue: str, leases: Mapping[str, Lease], lease_ms: int, interval_s: float,
        on_beat: Callable[[], None], gate: LimiterGate | None = None, *, idle_wait: bool = False,
    ) -> None:
        """`idle_wait`: while no lease is held, wait for `work` instead of ticking (a process with
        many idle queues then sets no timer per queue)."""
        self.scripts = scripts
        self.gate = gate  # named limiters: their holds are extended with the leases
        self.queue = queue
        self.leases = leases
        self.lease_ms = lease_ms
        self.interval_s = interval_s
        self.on_beat = on_beat
        self.idle_wait = idle_wait
        self.work = asyncio.Event()  # set by the worker when it takes leases
        self.calls = 0  # extend calls made (each renews every lease held)
        self.last_beat: float | None = None

    async def run(self) -> None:
        while True:
            if self.idle_wait and not self.leases:
                self.last_beat = time.time()
                self.on_beat()
                self.work.clear()
                if not self.leases:
                    await self.work.wait()
            await asyncio.sleep(self.interval_s)
            await self.beat()

    async def beat(self) -> None:
        held = [lease for lease in self.leases.values() if lease.stop is not Stop.LOST]
        self.last_beat = time.time()
        self.on_beat()
        if self.gate is not None:
            await self.gate.extend()
        if not held:
            return
        confirm = [lease.started and not lease.confirmed for lease in held]
        self.calls += 1
        try:
            statuses = await self.scripts.extend(
                self.lease_ms, [(lease.job_id, lease.token, c) for lease, c in zip(held, confirm, strict=True)]
            )
        except ConnectionFailedError as exc:
            logger.warning("queue %s: heartbeat failed (%s); leases not renewed this time", self.queue, exc)
            return
        for lease, confirmed, status in zip(held, confirm, statuses, strict=True):
            if status in (0, 1) and confirmed:  # 2: extended, but the record (and its mark) out of reach
                lease.confirmed = True
            if status == 1 and not lease.cancel_requested:
                lease.cancel_requested = True
                if lease.running:
                    logger.info("queue %s: cancelling job %s on request", self.queue, lease.job_id)
                    lease.request_stop(Stop.CANCEL)
            elif status < 0 and lease.stop is not Stop.LOST:
                if lease.running:
                    logger.warning(
                        "queue %s: lease of job %s was lost (it expired and the job went back to the queue); "
                        "stopping its handler", self.queue, lease.job_id)
                lease.request_stop(Stop.LOST)
                lease.stop = Stop.LOST
