"""A flow sent again (a lost reply on flow-add, an HTTP client repeating its Idempotency-Key) after
some of its children completed and their records went (result_ttl=0, retention)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from conveyor import JobState, Queue
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def _total(q: Queue) -> int:
    return sum((await q.counts()).values())


async def test_a_flow_sent_again_does_not_run_children_whose_results_its_parent_holds(queues: list[Queue]) -> None:
    """A completed child whose record was gone (result_ttl=0) did not exist any more when the same
    tree was sent again, so it was written anew and ran a second time, although its parent held its
    result already. Now a node whose parent holds its result is not written again (nor anything
    below it): the flow sent again is the same flow, each child run once."""
    a, b, c = queues
    runs: Counter[str] = Counter()

    async def child(ctx: JobContext, n: int) -> int:
        runs[f"{ctx.queue}:{n}"] += 1
        return n * 10

    async def mid(ctx: JobContext, data: Any) -> int:
        runs["mid"] += 1
        return sum((await ctx.children()).results.values())

    async def parent(ctx: JobContext, data: Any) -> list[Any]:
        return (await ctx.children()).ordered()

    gone = JobOptions(result_ttl=0)
    root = FlowNode(a.name, "parent", None, JobOptions(job_id="resent-ttl0"), children=[
        FlowNode(b.name, "child", 1, gone),
        FlowNode(c.name, "mid", None, gone, children=[FlowNode(b.name, "child", 2, gone)]),
    ])
    job = await a.add_flow(root)
    async with workers(queues, {b: {"child": child}, c: {"mid": mid}}):  # no worker for the root yet
        await wait_for(lambda: _state_is(a, job.id, JobState.WAITING), 60, what="every child counted")
    assert await _total(b) == 0 and await _total(c) == 0  # their records went with their results
    again = await a.add_flow(root)  # the same tree sent again (its first reply lost, say)
    assert again.id == job.id and not again.created
    assert await _total(b) == 0 and await _total(c) == 0
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}, c: {"mid": mid}}):
        assert await job.result(timeout=60) == [10, 20]
    assert runs == Counter({f"{b.name}:1": 1, f"{b.name}:2": 1, "mid": 1})


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state
