"""Flow counters edited by hand (a value that is not an integer) never stand a flow still: the
scripts that add to them count again or start again, as the core scripts do for `meta` counters."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


@pytest.mark.parametrize("where", ["pending", "flows_started"])
async def test_a_spoiled_count_never_stops_a_job_adopting_children(queues: list[Queue], where: str) -> None:
    """Before, flow-adopt-2 added to the job's `pending` and the queue's `flows_started` with a plain
    HINCRBY: either one edited to a non-integer made every ctx.add_children of the queue fail, so the
    parent never took its children. Now `pending` is counted again from the children without an end
    and `flows_started` starts again."""
    a, b, _ = queues
    runs = {"parent": 0}

    async def parent(ctx: JobContext, data: Any) -> Any:
        runs["parent"] += 1
        kids = await ctx.children()
        if not kids.all_ended:
            await ctx.add_children([FlowNode(b.name, "up", t) for t in ("x", "y")])
            ctx.wait_for_children()
        return kids.ordered()

    async def up(ctx: JobContext, data: Any) -> Any:
        return data.upper()

    await a.pause()
    job = await a.add("parent", attempts=1)
    if where == "pending":
        await a.client.hset(a.keys.job(job.id), "pending", "garbage")
    else:
        await a.client.hset(a.keys.meta, "flows_started", "garbage")
    await a.resume()
    async with workers(queues, {a: {"parent": parent}, b: {"up": up}}):
        assert await job.result(timeout=60) == ["X", "Y"]
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.pending_children == 0 and runs["parent"] == 2


async def test_a_spoiled_step_count_is_counted_again(queues: list[Queue]) -> None:
    """Before, step-1 added to the job's `nsteps` with a plain HINCRBY: edited to a non-integer, every
    ctx.step of the job failed and the job failed with it. Now the stored steps are counted again,
    so the job runs and the bound of 100 steps still holds."""
    a = queues[0]
    calls = {"n": 0}

    async def stepper(ctx: JobContext, data: Any) -> Any:
        def one(i: int) -> int:
            calls["n"] += 1
            return i

        return [await ctx.step(f"s{i}", one, i) for i in range(3)]

    await a.pause()
    job = await a.add("stepper", attempts=1)
    await a.client.hset(a.keys.job(job.id), mapping={"nsteps": "1e400x", "s:s0": "0"})  # s0 done already
    await a.resume()
    async with workers(queues, {a: {"stepper": stepper}}):
        assert await job.result(timeout=60) == [0, 1, 2]
    assert calls["n"] == 2  # the stored step was not run again
    assert await a.client.hget(a.keys.job(job.id), "nsteps") == "3"


async def test_a_spoiled_pending_count_never_releases_a_parent_early(queues: list[Queue]) -> None:
    """Before, a parent's `pending` edited to a non-integer started again from -1 at the next
    child's end, so the parent was released and ran while its other children were still waiting
    (with their results missing). Now it is counted again from the children without an end."""
    a, b, _ = queues

    async def sq(ctx: JobContext, n: int) -> int:
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    job = await a.add_flow(FlowNode(a.name, "parent", None, children=[
        FlowNode(b.name, "sq", 2), FlowNode(b.name, "sq", 3, JobOptions(delay=3600))]))
    (_, first), (_, later) = (await job.record()).children
    await a.client.hset(a.keys.job(job.id), "pending", "garbage")
    async with workers(queues, {a: {"parent": parent}, b: {"sq": sq}}):
        async def counted() -> bool:
            return bool(await a.client.hexists(a.keys.job(job.id), f"r:{b.name}:{first}"))

        await wait_for(counted, timeout=60, what="the first child was counted")
        rec = await job.record()
        assert rec.state is JobState.WAITING_CHILDREN and rec.pending_children == 1
        await b.promote(later)
        assert await job.result(timeout=60) == [4, 9]
