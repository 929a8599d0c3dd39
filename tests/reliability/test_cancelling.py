"""Closing ends every background loop, even one whose cancellation was lost.

Python 3.11's `asyncio.wait_for` returns its inner call's result when that call finishes in the
same event-loop turn as the cancellation arrives, and the cancelled task goes on; redis-py wraps
every send in it. A worker that cancelled its loops once left such a loop running after `close()`
(its Redis calls going on), and the test's event loop then waited for it for ever at teardown."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest

from conveyor import Queue, Worker
from conveyor.cancelling import cancel_and_wait
from conveyor.partitions import PartitionedQueue, PartitionedWorker
from conveyor.redis.connection import RedisClient


async def _drops_one_cancellation() -> None:
    """A loop that lost one cancellation (as in wait_for above) and goes on waiting."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for no longer drops a cancellation from 3.12")
async def test_wait_for_drops_a_cancellation_on_python_3_11() -> None:
    """What the module docstring says, shown: the inner call finishes as the cancellation comes."""
    inner = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(asyncio.wait_for(inner, 60))
    await asyncio.sleep(0)  # waiting now awaits inside wait_for
    inner.set_result("reply")
    waiting.cancel()
    assert await waiting == "reply"  # not CancelledError


async def test_cancel_and_wait_cancels_again_until_the_task_ends() -> None:
    task = asyncio.ensure_future(_drops_one_cancellation())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], again_after_s=0.01) == set()
    assert task.cancelled()


async def test_cancel_and_wait_gives_up_at_its_timeout() -> None:
    stop = asyncio.Event()

    async def ignores_cancellation() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()

    task = asyncio.ensure_future(ignores_cancellation())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=0.05, again_after_s=0.01) == {task}
    stop.set()
    task.cancel()
    await task


async def _close_ends_every_loop(queue: Queue, worker: Worker | PartitionedWorker) -> None:
    try:
        await worker.start()
        await worker.close(0)
        still = {name: task for name, task in worker.loop_tasks.items() if not task.done()}
        assert still == {}, "close() left loops running"
    finally:
        await queue.obliterate(force=True)


async def test_closing_a_worker_ends_a_loop_that_lost_its_cancellation(plain_client: RedisClient, qname: str) -> None:
    queue = Queue(qname, redis=plain_client)
    worker = Worker(queue, {})
    worker.mover.run = _drops_one_cancellation  # type: ignore[method-assign]
    await _close_ends_every_loop(queue, worker)


async def test_closing_a_partitioned_worker_ends_every_loop(plain_client: RedisClient, qname: str) -> None:
    queue = PartitionedQueue(qname, partitions=2, redis=plain_client)
    worker = PartitionedWorker(queue, {})
    for part in worker.workers:
        part.mover.run = _drops_one_cancellation  # type: ignore[method-assign]
    await _close_ends_every_loop(queue, worker)
