"""Concurrency slots shared by the workers of a partitioned queue (conveyor.partitions).

Each partition has its own worker (its own pump, lease table and wake-up), but the queue's
concurrency is one budget: a partition with work may use every free slot while the others are
idle. When a slot frees, the next partition with work in a rotation is offered it (besides the
pump that freed it, which claims when it records the outcome), so partitions with work take turns
at the free slots and none starves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conveyor.worker.pump import TripPump


class SlotPool:
    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.running = 0
        self.pumps: list[TripPump] = []
        self._turn = 0

    def free_for(self, pump: TripPump) -> int:
        """Slots `pump` may still ask for, net of the runs and of the other pumps' trips in flight
        (the pump subtracts its own)."""
        others = sum(p.reserved for p in self.pumps if p is not pump)
        return self.concurrency - self.running - others

    def released(self) -> None:
        """A slot came free: offer it to one other pump with work, the next in a rotation (the
        pump that freed it claims anyway when it records the outcome), so partitions with work
        take turns without every pump sending a trip for every freed slot."""
        pumps = self.pumps
        for _ in range(len(pumps)):
            self._turn = (self._turn + 1) % len(pumps)
            pump = pumps[self._turn]
            if pump.has_work:
                pump.kick.set()
                return
