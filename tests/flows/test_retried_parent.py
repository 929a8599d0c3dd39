"""Retrying a flow parent that was cancelled or failed, while the hand-over of that end is still on
its way (docs/flows.md, "Retrying a failed or cancelled parent")."""

from __future__ import annotations

from typing import Any

from conveyor import JobState, Queue
from conveyor.flows import FlowNode
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def _square(ctx: JobContext, n: int) -> int:
    return n * n


async def _collect(ctx: JobContext, data: Any) -> list[Any]:
    return (await ctx.children()).ordered()


async def test_a_cancelled_parent_retried_before_its_children_were_cancelled_runs_with_them(
    queues: list[Queue],
) -> None:
    """Cancelling a parent leaves the cancellation of its children in its queue's outbox; a retry made
    before a worker of that queue cancelled them left it there, so the retried parent (back in
    waiting-children, "it runs once they have ended") then cancelled its own children and failed by
    them. Now the retry withdraws that cancellation: the children run and the parent runs with them."""
    a, b, _ = queues
    root = FlowNode(a.name, "collect", None, children=[FlowNode(b.name, "square", n) for n in (2, 3)])
    job = await a.add_flow(root)
    assert await a.cancel(job.id) is JobState.CANCELLED
    assert await a.retry(job.id) is JobState.WAITING_CHILDREN
    async with workers(queues, {a: {"collect": _collect}, b: {"square": _square}}):
        await wait_for(lambda: _ended(a, job.id), 60, what="the retried parent ends")
        rec = await job.record()
        assert rec.state is JobState.COMPLETED, rec.error
        assert rec.result == [4, 9]
        for q, child in rec.children:
            assert await Queue(q, redis=a.client).get_state(child) is JobState.COMPLETED


async def _ended(q: Queue, job_id: str) -> bool:
    return await q.get_state(job_id) in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
