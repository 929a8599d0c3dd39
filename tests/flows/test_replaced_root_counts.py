"""A flow's root that a newer keyed job replaced (cancelled by add-keyed-6.lua) counts in
`flows_failed`, as a root cancelled any other way does (flow_counts(), conveyor_flows_now; docs/flows.md,
"Counting flows"). Before, it was counted nowhere: started 1, completed 0, failed 0 for good."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.flows import FlowNode
from conveyor.service.metrics import Metrics
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers
from tests.flows.test_retried_root_counts import _gauge


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state


@pytest.mark.parametrize(("mode", "window"), [("latest", None), ("debounce", 0.05)])
async def test_a_root_replaced_by_a_keyed_job_counts_as_failed(
    queues: list[Queue], mode: str, window: float | None
) -> None:
    a, b, _ = queues
    key = "report:7"

    async def parent(ctx: JobContext, data: Any) -> Any:
        if not (await ctx.children()).all_ended:
            await ctx.add_children([FlowNode(b.name, "child", 1)])
            ctx.wait_for_children()
        return "done"

    async def child(ctx: JobContext, data: Any) -> Any:
        return data

    root = await a.add("parent", None, key=key, key_mode=mode, key_window=window)
    async with workers(queues, {a: {"parent": parent}}):  # it adopts a child and waits for it
        await wait_for(lambda: _state_is(a, root.id, JobState.WAITING_CHILDREN), 60, what="the root waits")
    async with workers(queues, {b: {"child": child}}):  # the child ends: the root waits for a worker again
        await wait_for(lambda: _state_is(a, root.id, JobState.WAITING), 60, what="the root is ready")
    assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 0}

    newer = await a.add("parent", None, key=key, key_mode=mode, key_window=window)  # replaces the root
    assert newer.id != root.id
    assert await a.get_state(root.id) is JobState.CANCELLED
    assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}
    metrics = Metrics({})
    metrics.set_flow_totals(a.name, await a.flow_counts())
    assert _gauge(metrics.render().decode(), "failed", a.name) == 1
