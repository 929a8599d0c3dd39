"""Bounded work and bounded storage: a child's hand-over costs the same Redis work however many
siblings it has; step results are bounded; a removed parent leaves no child running."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.errors import SerializationError
from conveyor.flows import FlowNode
from conveyor.redis import flow_scripts
from conveyor.redis.connection import RedisClient, connect
from conveyor.testing import RedisServer
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


@pytest.fixture(scope="module")
def private_server() -> Iterator[RedisServer]:
    """A server of its own, so its command statistics count only this test's calls."""
    with RedisServer() as server:
        yield server


async def _calls(client: RedisClient) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_") and "eval" not in k
               and k not in ("cmdstat_info", "cmdstat_config|resetstat"))


async def test_a_hand_over_costs_the_same_with_10_or_2000_siblings(private_server: RedisServer, qname: str) -> None:
    client = connect(private_server.url)
    a, b = Queue(qname + "-p", redis=client), Queue(qname + "-c", redis=client)
    try:
        costs = {}
        for n in (10, 2000):
            job = await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode(b.name, "c", i) for i in range(n)]))
            refs = ["{}:{}".format(*c) for c in (await job.record()).children]
            spent = []
            for ref in refs[:5]:  # the first five children end, one call each
                before = await _calls(client)
                assert await flow_scripts.deliver(client, a.keys, job.id, [(ref, "C", "1")], 1000) == [2]
                spent.append(await _calls(client) - before)
            costs[n] = spent
        assert costs[10] == costs[2000], costs  # no work proportional to the siblings
        assert max(costs[2000]) <= 12
    finally:
        for q in (a, b):
            await q.obliterate(force=True)
        await client.aclose()


async def test_step_results_are_bounded(queues: list[Queue]) -> None:
    a = queues[0]
    seen: dict[str, Any] = {}

    async def handler(ctx: JobContext, data: Any) -> Any:
        try:
            await ctx.step("huge", lambda: "x" * (600 * 1024))
        except SerializationError as exc:
            seen["huge"] = str(exc)
        for i in range(100):
            await ctx.step(f"s{i}", lambda i=i: i)
        try:
            await ctx.step("one-too-many", lambda: 1)
        except Exception as exc:
            seen["many"] = type(exc).__name__
        return "done"

    job = await a.add("steps")
    async with workers([a], {a: {"steps": handler}}):
        assert await job.result(timeout=60) == "done"
    assert "over" in seen["huge"] and seen["many"] == "ScriptInputError"


async def test_removing_a_waiting_parent_cancels_its_children(queues: list[Queue]) -> None:
    a, b, _ = queues
    job = await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode(b.name, "c", i) for i in range(3)]))
    kids = [i for _, i in (await job.record()).children]
    await a.remove(job.id)
    async with workers(queues, {a: {}, b: {}}):
        for kid in kids:
            await wait_for(lambda kid=kid: _state_is(b, kid, JobState.CANCELLED), 60, what=f"{kid} cancelled")


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state


async def test_obliterate_deletes_waiting_parents_and_the_outbox(queues: list[Queue], client: RedisClient) -> None:
    a = queues[0]
    job = await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode(a.name, "c", 1)]))
    await client.hset(a.keys.outbox, "x", "C|elsewhere:1|1")
    await a.obliterate(force=True)
    assert await client.exists(a.keys.job(job.id), a.keys.waiting_children, a.keys.outbox) == 0
