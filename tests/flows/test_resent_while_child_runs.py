"""A flow sent again while a child of its removed root still runs with the removal's cancellation
request is refused with nothing written, and is accepted once that child has ended."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.errors import FlowBusyError
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def test_a_flow_sent_again_waits_for_a_child_that_ignores_the_removals_cancellation(
    queues: list[Queue],
) -> None:
    a, b, _ = queues
    release = asyncio.Event()  # the child's handler ends only once the test sets it
    started = asyncio.Event()
    told: list[str] = []  # cancellations the child's handler ignored
    runs: list[int] = []

    async def stubborn(ctx: JobContext, n: int) -> int:
        runs.append(n)
        started.set()
        while True:
            try:
                await release.wait()
                return n * n
            except asyncio.CancelledError:
                told.append(ctx.job_id)

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    root = FlowNode(a.name, "parent", None, JobOptions(job_id="busy-1"), children=[FlowNode(b.name, "sq", 4)])
    job = await a.add_flow(root)
    ((_, child_id),) = (await job.record()).children
    try:
        async with workers(queues, {a: {"parent": parent}, b: {"sq": stubborn}}):
            await asyncio.wait_for(started.wait(), 60)
            await a.remove("busy-1")

            async def told_to_cancel() -> bool:
                return bool(told) and await b.client.hget(b.keys.job(child_id), "pcx") is not None

            await wait_for(told_to_cancel, timeout=60, what="the running child was told to cancel by the removal")
            assert await b.get_state(child_id) is JobState.ACTIVE
            for _ in range(3):  # refused each time while the child runs, whole
                with pytest.raises(FlowBusyError, match=child_id):
                    await a.add_flow(root)
            assert await a.get_job("busy-1") is None, "nothing was written"
            assert await b.get_state(child_id) is JobState.ACTIVE

            release.set()

            async def child_ended() -> bool:
                return await b.get_state(child_id) is not JobState.ACTIVE

            await wait_for(child_ended, timeout=60, what="the child ended")
            assert await b.get_state(child_id) is JobState.COMPLETED, "it returned: its outcome is recorded"
            job = await a.add_flow(root)
            assert job.created
            assert await job.result(timeout=60) == [16]
    finally:
        release.set()  # a failed check must not leave the handler waiting for ever
    assert runs == [4], "the new root counted the child that had completed; it did not run again"
