"""Flow counters (Redis totals -> Prometheus), flow events, and waiting-children in counts."""

from __future__ import annotations

from typing import Any

from conveyor import JobState, Queue, Unrecoverable
from conveyor.flows import FlowNode
from conveyor.redis.connection import RedisClient
from conveyor.service.metrics import Metrics
from conveyor.worker import JobContext
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
