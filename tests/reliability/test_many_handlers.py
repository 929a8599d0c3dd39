"""A worker with more handler names than one trip carries (finish-10.lua takes up to 1,000) still
takes back the held jobs it has a handler for."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, Queue, Worker
from tests.conftest import running, wait_for
from tests.reliability.helpers import FAST, loops_alive


async def _ok(ctx: JobContext, data: Any) -> Any:
    return data


async def test_a_worker_with_over_1000_handlers_takes_its_held_jobs(queue: Queue) -> None:
    """Before, the pump sent all its handler names in one trip; finish-10.lua refuses a trip with
    more than 1,000, so with 1,001 handlers every such trip was refused, the pump crashed each time
    the hold version changed, and the jobs held for this worker's handlers waited until they failed
    with NoHandler. Now the names go 1,000 per trip."""
    holder = Worker(queue, {"other": _ok}, **FAST)
    async with running(holder):
        held = [await queue.add("h0000", 0), await queue.add("h1000", 1000)]
        await wait_for(lambda: holder.stats.held == 2, what="both jobs held")
    handlers = {f"h{n:04d}": _ok for n in range(1001)}
    worker = Worker(queue, handlers, **FAST)
    async with running(worker):
        assert [await job.result(timeout=30) for job in held] == [0, 1000]
        assert loops_alive(worker)
    assert worker.loop_restarts == 0
