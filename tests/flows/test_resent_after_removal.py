"""A flow sent again after its root was removed runs afresh what the removal cancelled, and is
refused (nothing written) while that cancellation is still under way."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState, Queue, codec
from conveyor.errors import FlowBusyError
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def test_a_flow_sent_again_after_its_removal_runs_what_the_removal_cancelled(queues: list[Queue]) -> None:
    """Before, the root sent again met the children its removal had cancelled: the new root failed at
    once on them (ChildFailed, 'cancelled'), or, sent before the mover had cancelled them, it was
    written, then its children were cancelled under it and it failed the same way; a hand-over a
    mover held from the old run was counted by the new root as well."""
    a, b, _ = queues
    runs: list[int] = []

    async def sq(ctx: JobContext, n: int) -> int:
        runs.append(n)
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    root = FlowNode(a.name, "parent", None, JobOptions(job_id="fresh-1"),
                    children=[FlowNode(b.name, "sq", 2), FlowNode(b.name, "sq", 3, JobOptions(delay=3600))])
    job = await a.add_flow(root)
    (_, done_id), (_, later_id) = (await job.record()).children
    async with workers(queues, {b: {"sq": sq}}):
        await wait_for(lambda: _pending(a, "fresh-1", 1), timeout=60, what="the first child was counted")
    await a.remove("fresh-1")  # no worker of the root's queue runs: its children's cancellation waits

    with pytest.raises(FlowBusyError, match="fresh-1"):
        await a.add_flow(root)
    assert await a.get_job("fresh-1") is None, "nothing was written"
    assert await b.get_state(later_id) is JobState.DELAYED

    async with workers(queues, {a: {"parent": parent}, b: {"sq": sq}}):
        async def cancelled_and_handed_over() -> bool:
            return (await b.get_state(later_id) is JobState.CANCELLED
                    and await a.client.hlen(a.keys.outbox) == 0 and await b.client.hlen(b.keys.outbox) == 0)

        await wait_for(cancelled_and_handed_over, timeout=60, what="the removal cancelled the delayed child")
        old_run = await b.client.hget(b.keys.job(later_id), "pcx")
        assert old_run, "the child knows which run of its parent cancelled it"

        job = await a.add_flow(root)
        assert job.created
        fresh = await b.get_job(later_id)
        assert fresh is not None and fresh.state is JobState.DELAYED and fresh.error is None, "written afresh"
        # A mover that read the old run's hand-over before the flow was sent again delivers it now.
        stale = {"type": "Cancelled", "message": "the child job was cancelled with its parent", "run": old_run}
        await b.client.hset(b.keys.outbox, later_id, f"F|{a.name}:fresh-1|{codec.dumps(stale).decode()}")
        await wait_for(lambda: _outbox_empty(b), timeout=60, what="the stale hand-over was delivered")
        assert await a.get_state("fresh-1") is JobState.WAITING_CHILDREN, "the new root did not count it"
        await b.promote(later_id)
        assert await job.result(timeout=60) == [4, 9]
    assert sorted(runs) == [2, 3], "the child that had completed did not run again"
    assert await b.get_state(done_id) is JobState.COMPLETED


async def _pending(q: Queue, job_id: str, n: int) -> bool:
    return await q.client.hget(q.keys.job(job_id), "pending") == str(n)


async def _outbox_empty(q: Queue) -> bool:
    return int(await q.client.hlen(q.keys.outbox)) == 0
