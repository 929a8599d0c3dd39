"""PartitionedWorker: one Worker per partition (each its own pump, leases, sweep and wake-up) over
one concurrency budget and one set of counters, so that it looks like one worker of one queue.

Fairness: the partitions share the free slots; when a slot frees, every partition's pump is
kicked in a rotating order (worker/slots.py), so partitions with work take turns and none
starves. An idle worker waits for all partitions in the process's wake hub: one BLPOP on a
standalone server or Sentinel, one per partition's slot on a Cluster; none is polled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from conveyor.errors import ConnectionFailedError
from conveyor.partitions.queue import PartitionedQueue
from conveyor.queue import Queue
from conveyor.worker.runner import Handler
from conveyor.worker.slots import SlotPool
from conveyor.worker.wakehub import Pacer, WakeHub
from conveyor.worker.worker import Worker, WorkerStats, default_worker_id

logger = logging.getLogger(__name__)


class PartitionedWorker:
    def __init__(
        self, queue: PartitionedQueue, handlers: Mapping[str, Handler], *, concurrency: int = 10,
        wake_hub: WakeHub | None = None, pacer: Pacer | None = None, worker_id: str | None = None,
        **options: Any,
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.worker_id = worker_id or default_worker_id()
        self._own_hub = wake_hub is None
        self.wake_hub = wake_hub or WakeHub(queue.client)
        self.pacer = pacer or Pacer()
        self.slots = SlotPool(concurrency)
        self.stats = WorkerStats()
        self.workers = [
            Worker(part, handlers, concurrency=concurrency, wake_hub=self.wake_hub, pacer=self.pacer,
                   worker_id=self.worker_id, slots=self.slots, stats=self.stats, **options)
            for part in queue.serving
        ]

    @property
    def active(self) -> int:
        return self.slots.running

    @property
    def trips(self) -> int:
        return sum(w.trips for w in self.workers)

    @property
    def running(self) -> bool:
        return any(w.running for w in self.workers)

    @property
    def pump_failures(self) -> int:
        return sum(w.pump_failures for w in self.workers)

    async def start(self) -> None:
        try:
            await self.queue.register()  # the layout, so tools that do not declare the queue read it whole
        except ConnectionFailedError as exc:  # recorded by the next add instead; the workers retry alone
            logger.warning("queue %s: partition layout not recorded (%s)", self.queue.name, exc)
        for worker in self.workers:
            await worker.start()

    async def run(self) -> None:
        await self.start()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*(w.wait_stopped() for w in self.workers))

    async def close(self, grace_s: float | None = None) -> None:
        await asyncio.gather(*(w.close(grace_s) for w in self.workers))
        if self._own_hub:
            await self.wake_hub.close()

    @property
    def loop_tasks(self) -> dict[str, asyncio.Task[None]]:
        """Every partition's loops, named `<loop>@<partition>`."""
        return {f"{name}@{i}": task for i, w in enumerate(self.workers) for name, task in w.loop_tasks.items()}

    def restart_loop(self, name: str) -> None:
        loop, _, index = name.partition("@")
        self.workers[int(index)].restart_loop(loop)

    @property
    def self_healing(self) -> bool:
        return all(w.self_healing for w in self.workers)

    @self_healing.setter
    def self_healing(self, on: bool) -> None:
        for worker in self.workers:
            worker.self_healing = on


QueueWorker = Worker | PartitionedWorker  # what runs one queue, partitioned or not


def worker_for(queue: Queue, handlers: Mapping[str, Handler], **options: Any) -> QueueWorker:
    """The worker of `queue`: a PartitionedWorker for a partitioned queue, a Worker otherwise."""
    if isinstance(queue, PartitionedQueue):
        return PartitionedWorker(queue, handlers, **options)
    return Worker(queue, handlers, **options)
