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
from collections.abc import Callable, Iterable, Mapping
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
        self.blocked = 0  # beats that came half a lease late or more (the event loop was blocked)
        self.overdue = 0  # runs found still going well after they were stopped or timed out (warned once each)
        self.last_beat: float | None = None

    async def run(self) -> None:
        while True:
            if self.idle_wait and not self.leases:
                self.last_beat = time.time()
                self.on_beat()
                self.work.clear()
                if not self.leases:
                    await self.work.wait()
            slept_at = time.monotonic()
            await asyncio.sleep(self.interval_s)
            late = time.monotonic() - slept_at - self.interval_s
            if late > self.lease_ms / 2000:
                self._blocked(late)
            await self.beat()

    def _check_overdue(self, leases: Iterable[Lease]) -> None:
        """Warn once per run that does not end although it was stopped or its timeout ran out: it
        keeps its slot, and its lease is renewed, until its handler returns."""
        now = time.monotonic()
        for lease in leases:
            if lease.overdue:
                continue
            why = lease.overdue_since(now)
            if why is not None:
                lease.overdue = True
                self.overdue += 1
                logger.warning(
                    "queue %s: job %s (%s) is still running although %s: its handler does not stop (it "
                    "catches CancelledError or JobInterrupted, or is stuck in a call that does not return); "
                    "it keeps its slot and its lease until it returns", self.queue, lease.job_id, lease.name, why)

    def _blocked(self, late: float) -> None:
        """The beat came `late` seconds late, half a lease or more: the event loop was blocked (or
        the process paused). Leases may have lapsed meanwhile and their jobs run again elsewhere."""
        self.blocked += 1
        # The culprit's run has usually just ended (the loop ran again when it returned): its lease
        # stays in the table until its outcome is answered.
        async_jobs = sorted({f"{lease.name} ({lease.job_id})" for lease in self.leases.values()
                             if lease.interrupt is None})
        logger.warning(
            "queue %s: the event loop was blocked for %.1f s (heartbeat every %.1f s, leases of %.1f s): "
            "leases may have lapsed and their jobs run again elsewhere. An async handler doing blocking "
            "work (time.sleep, a sync client, long CPU work) blocks the heartbeat: make it a plain def "
            "(it then runs in a thread) or use asyncio.to_thread. Async jobs held meanwhile: %s",
            self.queue, late + self.interval_s, self.interval_s, self.lease_ms / 1000,
            ", ".join(async_jobs[:10]) or "none")

    async def beat(self) -> None:
        held = [lease for lease in self.leases.values() if lease.stop is not Stop.LOST]
        self.last_beat = time.time()
        self.on_beat()
        if self.gate is not None:
            await self.gate.extend()
        if self.leases:
            self._check_overdue(self.leases.values())
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
