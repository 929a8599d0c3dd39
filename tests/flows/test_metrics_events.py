"""Flow counters (Redis totals -> Prometheus), flow events, and waiting-children in counts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobState, Queue, Unrecoverable
from conveyor.flows import FlowNode
from conveyor.redis.connection import RedisClient
from conveyor.service.metrics import Metrics
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


def sample(text: str, outcome: str, queue: str) -> float:
    for line in text.splitlines():
        if line.startswith("conveyor_flows_total{") and f'outcome="{outcome}"' in line and f'queue="{queue}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_flow_counters_and_events(queues: list[Queue], client: RedisClient) -> None:
    a, b, _ = queues

    async def child(ctx: JobContext, data: Any) -> Any:
        if data == "bad":
            raise Unrecoverable("no")
        return data

    async def parent(ctx: JobContext, data: Any) -> Any:
        return "ok"

    metrics = Metrics({})
    ok = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", "x")]))
    bad = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", "bad")]))
    gone = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "other", 1)]))
    assert (await a.counts())[JobState.WAITING_CHILDREN] == 3
    metrics.set_flow_totals(a.name, await a.flow_counts())
    assert sample(metrics.render().decode(), "started", a.name) == 3
    await a.cancel(gone.id)
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        assert await ok.result(timeout=60) == "ok"
        assert (await bad.wait(timeout=60)).state is JobState.FAILED
    assert await a.flow_counts() == {"started": 3, "completed": 1, "failed": 2}
    metrics.set_flow_totals(a.name, await a.flow_counts())
    text = metrics.render().decode()
    assert (sample(text, "started", a.name), sample(text, "completed", a.name), sample(text, "failed", a.name)) == (
        3, 1, 2)
    kinds = [(e.type, e.job_id) for e in await a.read_events("0-0")]
    for job in (ok, bad, gone):
        assert ("waiting-children", job.id) in kinds
    assert ("child", ok.id) in kinds and ("waiting", ok.id) in kinds
    child_events = [e for e in await a.read_events("0-0") if e.type == "child" and e.job_id == bad.id]
    assert len(child_events) == 1 and child_events[0].fields["state"] == "failed"


@pytest.mark.parametrize("end", ["stalled", "cancelled", "no handler"])
async def test_a_root_ended_by_a_sweep_is_counted(queues: list[Queue], end: str) -> None:
    """A flow's root that a sweep ended (failed for stalling too often, cancelled because its
    cancellation was requested while its worker was gone, or failed for want of a worker with its
    handler) was not counted in `flow_counts()`: the flow stayed "started" and never "failed", as if
    still running, in the metrics for good."""
    a, b, _ = queues

    async def child(ctx: JobContext, n: int) -> int:
        return n

    job = await a.add_flow(FlowNode(a.name, "total", None, children=[FlowNode(b.name, "child", 1)]))
    async with workers(queues, {b: {"child": child}}):  # no worker for the root: it waits once released
        await wait_for(lambda: _state_is(a, job.id, JobState.WAITING), 60, what="the root released")
    if end == "no handler":  # a worker of the root's queue without the root's handler holds it
        async with workers(queues, {a: {"other": child}}, no_handler_timeout_s=0.2):
            await wait_for(lambda: _state_is(a, job.id, JobState.FAILED), 60, what="the held root expires")
        assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}
        return
    claimed = await a.scripts.claim("gone", 100, 1)  # a worker that leases the root, then dies
    assert claimed[1] == job.id
    if end == "cancelled":
        assert await a.cancel(job.id) is JobState.ACTIVE

    async def swept() -> bool:
        await a.recover_stalled(0, 0)
        return await a.get_state(job.id) is not JobState.ACTIVE

    await wait_for(swept, 60, what="the lease expired and swept")
    assert await a.get_state(job.id) is (JobState.FAILED if end == "stalled" else JobState.CANCELLED)
    assert await a.flow_counts() == {"started": 1, "completed": 0, "failed": 1}


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state


async def test_a_parent_resumed_while_children_are_pending_says_it_waits_for_them(queues: list[Queue]) -> None:
    """A parent failed by a child resumes when the retried child completes: to `waiting` (with a
    `waiting` event) when no child is pending, else to `waiting-children` with no event saying so,
    so a reader of the events still saw it failed (or merely resumed) while it waited. Now the
    move is told with `waiting-children` (reason=resumed), as every other move into that state is."""
    a, b, _ = queues
    broken = {"yes": True}
    gate = asyncio.Event()

    async def bad(ctx: JobContext, n: int) -> int:
        if broken["yes"]:
            raise Unrecoverable("provider said no")
        return n

    async def slow(ctx: JobContext, n: int) -> int:
        await gate.wait()
        return n

    root = FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "bad", 1), FlowNode(b.name, "slow", 2)])
    job = await a.add_flow(root)
    bad_id = (await job.record()).children[0][1]
    async with workers(queues, {b: {"bad": bad, "slow": slow}}, concurrency=2):
        await wait_for(lambda: _state_is(a, job.id, JobState.FAILED), 60, what="the parent failed by its child")
        broken["yes"] = False
        await b.retry(bad_id)
        await wait_for(lambda: _state_is(a, job.id, JobState.WAITING_CHILDREN), 60, what="the parent resumed")
        events = [e for e in await a.read_events("0-0") if e.job_id == job.id]
        kinds = [e.type for e in events]
        assert kinds[-2:] == ["resumed", "waiting-children"], kinds
        assert events[-1].fields.get("reason") == "resumed"
        gate.set()
