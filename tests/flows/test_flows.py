"""Flows on real servers (standalone and a Cluster with the queues in different slots)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobState, Queue, Unrecoverable
from conveyor.errors import InvalidFlowError, ScriptInputError
from conveyor.flows import FlowNode
from conveyor.redis.connection import RedisClient
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def state(q: Queue, job_id: str) -> JobState | None:
    return await q.get_state(job_id)


async def test_fan_in_across_slots_gives_results_keyed_by_child(queues: list[Queue]) -> None:
    a, b, c = queues
    seen: dict[str, Any] = {}

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        seen["results"] = dict(kids.results)
        return {"sum": sum(kids.ordered()), "n": len(kids)}

    async def square(ctx: JobContext, data: Any) -> int:
        return int(data) ** 2

    root = FlowNode(a.name, "parent", {"x": 1}, children=[
        FlowNode(b.name, "square", 2), FlowNode(c.name, "square", 3), FlowNode(b.name, "square", 4),
    ])
    job = await a.add_flow(root)
    assert await state(a, job.id) is JobState.WAITING_CHILDREN
    assert (await a.counts())[JobState.WAITING_CHILDREN] == 1
    record = await job.record()
    assert [q for q, _ in record.children] == [b.name, c.name, b.name]
    async with workers(queues, {a: {"parent": parent}, b: {"square": square}, c: {"square": square}}):
        assert await job.result(timeout=60) == {"sum": 29, "n": 3}
    refs = [f"{q}:{i}" for q, i in record.children]
    assert seen["results"] == dict(zip(refs, [4, 9, 16], strict=True))
    child = await b.get_job(record.children[0][1])
    assert child is not None and child.parent == (a.name, job.id)
    assert (await a.counts())[JobState.WAITING_CHILDREN] == 0


async def test_tree_of_depth_three_on_any_queues(queues: list[Queue]) -> None:
    a, b, c = queues

    async def join(ctx: JobContext, data: Any) -> Any:
        return [data, (await ctx.children()).ordered()]

    leaf = FlowNode(a.name, "join", "leaf")
    root = FlowNode(c.name, "join", "root", children=[
        FlowNode(b.name, "join", "mid", children=[leaf, FlowNode(c.name, "join", "leaf2")]),
    ])
    job = await a.add_flow(root)
    async with workers(queues, {q: {"join": join} for q in queues}):
        assert await job.result(timeout=60) == ["root", [["mid", [["leaf", []], ["leaf2", []]]]]]


async def test_fail_policy_fails_parent_naming_child_and_retry_carries_on(queues: list[Queue]) -> None:
    a, b, _ = queues
    runs: dict[str, int] = {}
    broken = {"yes": True}

    async def child(ctx: JobContext, data: Any) -> Any:
        runs[data] = runs.get(data, 0) + 1
        if data == "bad" and broken["yes"]:
            raise Unrecoverable("provider said no")
        return data

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    root = FlowNode(a.name, "parent", None, children=[
        FlowNode(b.name, "child", "good"), FlowNode(b.name, "child", "bad"), FlowNode(b.name, "child", "fine"),
    ])
    job = await a.add_flow(root)
    bad_id = (await job.record()).children[1][1]
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        rec = await job.wait(timeout=60)
        assert rec.state is JobState.FAILED
        assert rec.error is not None and rec.error["type"] == "ChildFailed"
        assert f"{b.name}:{bad_id}" in rec.error["message"]
        # the siblings still run to their end and are counted
        await wait_for(lambda: runs.get("good") == 1 and runs.get("fine") == 1, what="siblings ran")
        broken["yes"] = False
        await b.retry(bad_id)
        await wait_for(_is(a, job.id, JobState.COMPLETED), 60, what="parent resumed and completed")
        assert await job.result(timeout=60) == ["good", "bad", "fine"]
    assert runs == {"good": 1, "bad": 2, "fine": 1}  # completed children did not run again


async def test_ignore_policy_runs_parent_with_error_in_place(queues: list[Queue]) -> None:
    a, b, _ = queues

    async def child(ctx: JobContext, data: Any) -> Any:
        if data == "bad":
            raise Unrecoverable("nope")
        return data

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        return {"ok": sorted(kids.results.values()), "errors": [e["message"] for e in kids.errors.values()]}

    root = FlowNode(a.name, "parent", None, on_child_failure="ignore", children=[
        FlowNode(b.name, "child", "x"), FlowNode(b.name, "child", "bad"), FlowNode(b.name, "child", "y"),
    ])
    job = await a.add_flow(root)
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        assert await job.result(timeout=60) == {"ok": ["x", "y"], "errors": ["nope"]}


async def test_continue_policy_runs_parent_at_once_with_results_so_far(queues: list[Queue]) -> None:
    a, b, c = queues
    release = asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> Any:
        await release.wait()
        return "slow"

    async def bad(ctx: JobContext, data: Any) -> Any:
        raise Unrecoverable("broken")

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        return {"results": list(kids.results.values()), "errors": len(kids.errors)}

    root = FlowNode(a.name, "parent", None, on_child_failure="continue", children=[
        FlowNode(b.name, "slow", None), FlowNode(c.name, "bad", None),
    ])
    job = await a.add_flow(root)
    async with workers(queues, {a: {"parent": parent}, b: {"slow": slow}, c: {"bad": bad}}):
        assert await job.result(timeout=60) == {"results": [], "errors": 1}
        release.set()


async def test_cancelling_parent_cancels_pending_children(queues: list[Queue]) -> None:
    a, b, c = queues
    root = FlowNode(a.name, "parent", None, children=[
        FlowNode(b.name, "child", 1), FlowNode(c.name, "mid", None, children=[FlowNode(b.name, "child", 2)]),
    ])
    job = await a.add_flow(root)
    rec = await job.record()
    assert await a.cancel(job.id) is JobState.CANCELLED
    # no handlers: the children wait until the mover of their parent's queue cancels them
    async with workers(queues, {a: {}, b: {}, c: {}}):
        mid = rec.children[1][1]
        await wait_for(lambda: state(b, rec.children[0][1]), what="child exists")
        await wait_for(_is(b, rec.children[0][1], JobState.CANCELLED), 60, what="child cancelled")
        await wait_for(_is(c, mid, JobState.CANCELLED), 60, what="mid cancelled")
        grandchild = (await c.get_job(mid)).children[0][1]  # type: ignore[union-attr]
        await wait_for(_is(b, grandchild, JobState.CANCELLED), 60, what="grandchild cancelled")


def _is(q: Queue, job_id: str, expected: JobState) -> Any:
    async def check() -> bool:
        return await q.get_state(job_id) is expected
    return check


async def test_child_removed_by_operator_counts_as_failed(queues: list[Queue]) -> None:
    a, b, _ = queues
    root = FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", 1)])
    job = await a.add_flow(root)
    child_id = (await job.record()).children[0][1]
    await b.remove(child_id)
    async with workers(queues, {a: {}, b: {}}):
        rec = await job.wait(timeout=60)
    assert rec.state is JobState.FAILED and rec.error is not None
    assert rec.error["type"] == "ChildFailed" and "removed" in rec.error["message"]


async def test_dynamic_children_then_parent_runs_again_with_results(queues: list[Queue]) -> None:
    a, b, _ = queues
    runs = {"parent": 0}

    async def parent(ctx: JobContext, data: Any) -> Any:
        runs["parent"] += 1
        topics = await ctx.step("retrieve", lambda: ["x", "y", "z"])
        kids = await ctx.children()
        if not kids.order:
            await ctx.add_children([FlowNode(b.name, "gen", t) for t in topics])
            ctx.wait_for_children()
        return kids.ordered()

    async def gen(ctx: JobContext, data: Any) -> Any:
        return data.upper()

    job = await a.add(name="parent")
    async with workers(queues, {a: {"parent": parent}, b: {"gen": gen}}):
        assert await job.result(timeout=60) == ["X", "Y", "Z"]
    assert runs["parent"] == 2
    rec = await job.record()
    assert rec.attempts_made == 1  # waiting for children did not use an attempt
    assert len(rec.children) == 3


async def test_durable_steps_do_not_run_again_and_go_with_the_job(queues: list[Queue], client: RedisClient) -> None:
    a = queues[0]
    calls = {"retrieve": 0, "generate": 0}

    async def retrieve(n: int) -> list[int]:
        calls["retrieve"] += 1
        return list(range(n))

    def generate(items: list[int]) -> int:
        calls["generate"] += 1
        if calls["generate"] == 1:
            raise RuntimeError("429 from the provider")
        return sum(items)

    async def handler(ctx: JobContext, data: Any) -> Any:
        items = await ctx.step("retrieve", retrieve, 4)
        return await ctx.step("generate", generate, items)

    job = await a.add("pipeline", attempts=3, backoff=0.01)
    async with workers([a], {a: {"pipeline": handler}}):
        assert await job.result(timeout=60) == 6
    assert calls == {"retrieve": 1, "generate": 2}
    assert await client.hget(a.keys.job(job.id), "s:retrieve") == "[0,1,2,3]"
    await a.remove(job.id)
    assert await client.exists(a.keys.job(job.id)) == 0


async def test_bad_node_is_refused_with_its_path_and_nothing_is_written(queues: list[Queue]) -> None:
    a, b, _ = queues
    root = FlowNode(a.name, "parent", None, children=[
        FlowNode(b.name, "ok", 1),
        FlowNode(b.name, "mid", None, children=[FlowNode(b.name, "big", "x" * (600 * 1024))]),
    ])
    with pytest.raises(InvalidFlowError) as err:
        await a.add_flow(root)
    assert err.value.path == "root.children[1].children[0]"
    with pytest.raises(InvalidFlowError) as err:
        await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode("bad queue!", "x")]))
    assert err.value.path == "root.children[0]"
    with pytest.raises(InvalidFlowError):
        await a.add_flow(FlowNode(a.name, "leaf", None, on_child_failure="ignore"))
    for q in (a, b):
        assert sum((await q.counts()).values()) == 0


async def test_hand_over_counts_a_child_once(queues: list[Queue], client: RedisClient) -> None:
    from conveyor.redis import flow_scripts

    a, b, _ = queues
    job = await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode(b.name, "c", 1), FlowNode(b.name, "c", 2)]))
    ref = "{}:{}".format(*(await job.record()).children[0])
    assert await flow_scripts.deliver(client, a.keys, job.id, [(ref, "C", "7")] * 3, 1000) == [2, 1, 1]
    assert await flow_scripts.deliver(client, a.keys, job.id, [(ref, "F", "{}")], 1000) == [1]
    rec = await job.record()
    assert rec.pending_children == 1 and rec.state is JobState.WAITING_CHILDREN
    assert await flow_scripts.deliver(client, a.keys, "gone", [(ref, "C", "7")], 1000) == [0]
    with pytest.raises(ScriptInputError):  # checked before any write
        await flow_scripts.deliver(client, a.keys, job.id, [(ref + "x", "C", "7"), (ref, "C", "not json")], 1000)
    assert (await job.record()).pending_children == 1


async def test_a_write_cut_short_is_completed_by_sending_the_tree_again(queues: list[Queue]) -> None:
    """On a Cluster a tree is written one script per (level, slot): a client that dies in between
    leaves the parent waiting; sending the same tree again with the same root job_id writes what is
    missing, and nothing twice."""
    from conveyor.flows.model import flatten
    from conveyor.flows.producer import write_nodes
    from conveyor.options import JobOptions

    a, b, _ = queues

    async def child(ctx: JobContext, data: Any) -> Any:
        return data

    async def parent(ctx: JobContext, data: Any) -> Any:
        return sorted((await ctx.children()).results.values())

    root = FlowNode(a.name, "parent", None, JobOptions(job_id="order-17"),
                    children=[FlowNode(b.name, "child", i) for i in range(4)])
    flat = flatten(root, lambda name: a if name == a.name else b)
    await write_nodes(a, [flat.nodes[0][1]], [0])  # the root only: the client died before the children
    assert (await a.get_job("order-17")).pending_children == 4  # type: ignore[union-attr]
    job = await a.add_flow(root)  # sent again
    assert job.id == "order-17" and not job.created
    assert sum((await b.counts()).values()) == 4
    async with workers(queues, {a: {"parent": parent}, b: {"child": child}}):
        assert await job.result(timeout=60) == [0, 1, 2, 3]


async def test_removing_a_parent_a_child_failed_cancels_its_children_still_pending(queues: list[Queue]) -> None:
    """Removing a parent cancels its pending children, but only a parent still waiting did so: one
    that a child had failed (under `fail`, its other children run on) was removed with those
    children left to run for a parent that no longer existed. Now they are cancelled as well."""
    a, b, _ = queues
    root = FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "child", 1), FlowNode(b.name, "child", 2)])
    job = await a.add_flow(root)
    first, second = [i for _, i in (await job.record()).children]
    await b.remove(first)  # counts as failed: the parent fails, the second child is still pending
    async with workers(queues, {a: {}, b: {}}):
        await wait_for(_is(a, job.id, JobState.FAILED), 60, what="the parent failed by its child")
        assert (await job.record()).pending_children == 1
        await a.remove(job.id)
        await wait_for(_is(b, second, JobState.CANCELLED), 60, what="the pending child cancelled")
