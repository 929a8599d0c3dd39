"""Shared pieces of the fault tests: fast worker settings, a gated handler, fault-tolerant checks."""

from __future__ import annotations

import asyncio
from typing import Any

from conveyor import ConnectionFailedError, JobContext, JobState, Queue, Worker
from conveyor.redis.connection import connect

# Fast loops, so faults are met and recovered from quickly.
FAST: dict[str, Any] = {"lease_ms": 3000, "heartbeat_ms": 100, "stalled_interval_ms": 200, "idle_block_s": 0.5}


class Gate:
    """A handler that returns its data once the test opens the gate."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def handler(self, ctx: JobContext, data: Any) -> Any:
        await self.event.wait()
        return data

    def open(self) -> None:
        self.event.set()


def queues(url: str, name: str) -> tuple[Queue, Queue]:
    """The test's view and the worker's view of one queue, each with its own client."""
    return Queue(name, redis=connect(url)), Queue(name, redis=connect(url))


async def all_completed(queue: Queue, ids: list[str]) -> bool:
    try:
        return all([await queue.get_state(i) is JobState.COMPLETED for i in ids])
    except ConnectionFailedError:  # the test's own connection met the fault too
        return False


def loops_alive(worker: Worker) -> bool:
    return all(not task.done() for task in worker.loop_tasks.values())
