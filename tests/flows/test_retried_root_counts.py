"""A flow's root counts by its final outcome: one that failed, was retried and completed is in
`flows_completed` only (flow_counts(), metrics; docs/flows.md, "Counting flows")."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState, Queue, Unrecoverable
from conveyor.errors import InvalidStateError
from conveyor.flows import FlowNode
from conveyor.redis.connection import RedisClient
from conveyor.service.metrics import Metrics
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


def _gauge(text: str, outcome: str, queue: str) -> float:
    for line in text.splitlines():
        if line.startswith("conveyor_flows_now{") and f'outcome="{outcome}"' in line and f'queue="{queue}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return -1.0


async def test_a_root_that_failed_then_was_retried_and_completed_counts_as_completed_only(
    queues: list[Queue],
) -> None:
    """Before, the retried root stayed in flows_failed and was counted in flows_completed as well."""
    a, b, _ = queues
    runs: list[int] = []

    async def parent(ctx: JobContext, data: Any) -> str:
        runs.append(1)
        if len(runs) == 1:
            raise Unrecoverable("first run fails")
        return "ok"

    async def child(ctx: JobContext, data: Any) -> Any:
        return data

    job = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", 1)]))
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        assert (await job.wait(timeout=60)).state is JobState.FAILED
        assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}
        assert await a.retry(job.id) is JobState.WAITING
        with pytest.raises(InvalidStateError):  # the same retry sent again: counted once
            await a.retry(job.id)
        assert await job.result(timeout=60) == "ok"
    assert await a.flow_counts() == {"started": 1, "completed": 1, "failed": 0}
    metrics = Metrics({})
    metrics.set_flow_totals(a.name, await a.flow_counts())
    text = metrics.render().decode()
    assert (_gauge(text, "completed", a.name), _gauge(text, "failed", a.name)) == (1, 0)


async def test_a_root_resumed_by_a_retried_child_leaves_flows_failed(queues: list[Queue]) -> None:
    """A child that failed its root (under `fail`) is retried and completes: the root carries on and
    completes, and it no longer counts as failed."""
    a, b, _ = queues
    bad = {"on": True}

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    async def child(ctx: JobContext, data: Any) -> Any:
        if bad["on"]:
            raise Unrecoverable("not yet")
        return data

    job = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", 7)]))
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        assert (await job.wait(timeout=60)).state is JobState.FAILED
        assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}
        bad["on"] = False
        rec = await job.record()
        await b.retry(rec.children[0][1])
        await wait_for(lambda: _state_is(a, job.id, JobState.COMPLETED), 60, what="the resumed root completes")
        assert await job.result(timeout=60) == [7]
    assert await a.flow_counts() == {"started": 1, "completed": 1, "failed": 0}


async def test_a_retried_root_never_takes_flows_failed_below_zero(queues: list[Queue], client: RedisClient) -> None:
    a, b, _ = queues
    job = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", 1)]))
    assert await a.cancel(job.id) is JobState.CANCELLED  # a cancelled root counts as failed
    assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}
    await client.hset(a.keys.meta, "flows_failed", 0)  # reset by hand meanwhile
    assert await a.retry(job.id) is JobState.WAITING_CHILDREN
    assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 0}
    await wait_for(lambda: _state_is(a, job.id, JobState.WAITING_CHILDREN), 30, what="the root waits")


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state
