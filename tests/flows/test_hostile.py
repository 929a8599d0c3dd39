"""Flows against hostile input and operations on live flows: ids taken by jobs outside the flow, a
flow sent again after its root went, children on partitioned queues."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.errors import IdempotencyConflictError
from conveyor.flows import FlowNode
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers


async def _total(q: Queue) -> int:
    return sum((await q.counts()).values())


async def test_a_child_id_taken_by_a_job_outside_the_flow_is_refused_whole(queues: list[Queue]) -> None:
    """A job with the id, name and data a node would have, but outside the flow, never reports to the
    node's parent: adopting it left the parent waiting for ever. It is a conflict, found before any
    write (on a Cluster too, where the tree is written level by level)."""
    a, b, c = queues
    await b.add("sq", 3, job_id="shared")
    root = FlowNode(a.name, "p", None, children=[
        FlowNode(c.name, "sq", 1),
        FlowNode(c.name, "mid", None, children=[FlowNode(b.name, "sq", 3, JobOptions(job_id="shared"))]),
    ])
    with pytest.raises(IdempotencyConflictError, match="shared"):
        await a.add_flow(root)
    assert await _total(a) == 0 and await _total(c) == 0 and await _total(b) == 1
    rec = await b.get_job("shared")
    assert rec is not None and rec.parent is None

    # a plain job holding the root's id (same name and data) is not the flow's root either
    await a.add("p", None, job_id="root-taken")
    with pytest.raises(IdempotencyConflictError, match="root-taken"):
        await a.add_flow(FlowNode(a.name, "p", None, JobOptions(job_id="root-taken"),
                                  children=[FlowNode(c.name, "sq", 5)]))
    assert await _total(c) == 0


async def test_a_flow_sent_again_after_its_root_was_removed_runs_the_new_root(queues: list[Queue]) -> None:
    """The same tree sent again (same root job_id) after the root was removed: the children that
    still exist and have ended report again, so the new root runs; it waited for ever before."""
    a, b, _ = queues
    runs: list[Any] = []

    async def sq(ctx: JobContext, n: int) -> int:
        runs.append(n)
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    async def boom(ctx: JobContext, n: int) -> int:
        raise ValueError("no")

    root = FlowNode(a.name, "parent", None, JobOptions(job_id="again-1"), on_child_failure="ignore",
                    children=[FlowNode(b.name, "sq", 2), FlowNode(b.name, "sq", 3), FlowNode(b.name, "boom", 4)])
    async with workers(queues, {a: {"parent": parent}, b: {"sq": sq, "boom": boom}}):
        job = await a.add_flow(root)
        first = await job.result(timeout=60)
        assert first[:2] == [4, 9] and first[2]["type"] == "ValueError"
        await a.remove("again-1")
        job = await a.add_flow(root)
        assert job.created
        again = await job.result(timeout=60)
        assert again[:2] == [4, 9] and again[2]["type"] == "ValueError"
        # the new root also holds the re-sent leaves only once, and no leaf ran twice
        rec = await job.record()
        assert rec.state is JobState.COMPLETED and rec.pending_children == 0
    assert sorted(runs) == [2, 3]


async def test_a_flow_node_on_a_partitioned_queue_is_refused_before_any_write(backend_url: str, qname: str) -> None:
    """A partitioned queue is served by partition; a flow writes its jobs under the queue's plain keys
    (or, through the app's handle, in partition 0 under a parent reference that names the plain
    queue): a parent there never heard of its children and waited for ever. Every way in refuses it."""
    from conveyor import Conveyor
    from conveyor.errors import InvalidFlowError

    app = Conveyor(backend_url)
    parted, plain = qname + "-parted", qname + "-plain"
    app.declare_queue(parted, partitions=2)

    @app.task(queue=parted, name="sq")
    async def sq(ctx: JobContext, n: int) -> int:
        return n * n

    @app.task(queue=plain, name="total")
    async def total(ctx: JobContext) -> int:
        return sum((await ctx.children()).ordered())

    @app.task(queue=parted, name="ptotal")
    async def ptotal(ctx: JobContext) -> int:
        return sum((await ctx.children()).ordered())

    @app.task(queue=plain, name="one")
    async def one(ctx: JobContext, n: int) -> int:
        return n

    try:
        with pytest.raises(InvalidFlowError, match="partitioned") as err:
            await app.flow(app.fan_in(ptotal.node(), [one.node(1), one.node(2)]))
        assert err.value.path == "root"
        with pytest.raises(InvalidFlowError, match="partitioned") as err:
            await app.flow(app.fan_in(total.node(), [one.node(1), sq.node(2)]))
        assert err.value.path == "root.children[1]"
        # a plain handle naming the queue: Redis records the queue as partitioned
        await app.queue(parted).register()
        with pytest.raises(InvalidFlowError, match="partitioned"):
            await app.queue(plain).add_flow(FlowNode(plain, "total", None, children=[FlowNode(parted, "sq", 3)]))
        assert await _total(app.queue(plain)) == 0
        assert await _total(app.queue(parted)) == 0
        assert await _total(Queue(parted, redis=app.client)) == 0
    finally:
        for name in (parted, plain):
            await app.queue(name).obliterate(force=True)
        await app.close()


async def test_retrying_a_parent_failed_by_a_child_waits_for_the_children_still_running(queues: list[Queue]) -> None:
    """Retrying a parent that a child failed (under `fail`) sent it straight to waiting: its handler
    ran while a sibling was still running. And the failure stayed marked as the child's: when the
    parent later failed in its own handler, retrying and completing that child erased the parent's
    own error and ran it once more. Now the retried parent waits for the children still running, and
    its own failure stays."""
    a, b, _ = queues
    gate = asyncio.Event()
    bad_fails = {"on": True}
    runs: list[list[Any]] = []

    async def slow(ctx: JobContext, n: int) -> int:
        await gate.wait()
        return n

    async def bad(ctx: JobContext, n: int) -> int:
        if bad_fails["on"]:
            raise ValueError("bad")
        return n

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        runs.append([kids.results.get(r, "error" if r in kids.errors else None) for r in kids.order])
        raise ValueError("the parent fails on its own")

    root = FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "slow", 1), FlowNode(b.name, "bad", 2)])
    async with workers(queues, {a: {"parent": parent}, b: {"slow": slow, "bad": bad}}, concurrency=4):
        job = await a.add_flow(root)
        await wait_for(lambda: _in_state(a, job.id, JobState.FAILED), 60, what="the parent fails by its child")
        assert (await job.record()).error["type"] == "ChildFailed"  # type: ignore[index]
        slow_ref, bad_ref = ["{}:{}".format(*c) for c in (await job.record()).children]
        await a.retry(job.id)
        assert await a.get_state(job.id) is JobState.WAITING_CHILDREN
        gate.set()  # the sibling ends: now the parent runs, with the failed child's error in place
        await wait_for(lambda: _in_state(a, job.id, JobState.FAILED), 60, what="the parent runs and fails")
        assert runs == [[1, "error"]]
        assert (await job.record()).error["type"] == "ValueError"  # type: ignore[index]

        bad_fails["on"] = False
        await b.retry(bad_ref.partition(":")[2])
        await wait_for(lambda: _counted(a, job.id, bad_ref), 60, what="the retried child is counted")
        rec = await job.record()
        assert rec.state is JobState.FAILED and rec.error["type"] == "ValueError"  # type: ignore[index]
        assert runs == [[1, "error"]]
        assert slow_ref in (await a.children(job.id)).results


async def _in_state(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state


async def _counted(q: Queue, job_id: str, ref: str) -> bool:
    return ref in (await q.children(job_id)).results


async def test_a_job_holds_at_most_10000_children_over_all_its_add_children_calls(queues: list[Queue]) -> None:
    """Each add_children call was bounded (10,000 jobs), the total over calls was not (only a rough
    cap on the length of the children list, some 100,000 children), and every child's result lands in
    the parent's record. Now a job holds at most 10,000 children; the call over it is refused whole."""
    from conveyor.errors import InvalidFlowError

    a, b, _ = queues
    seen: dict[str, Any] = {}

    async def parent(ctx: JobContext, data: Any) -> Any:
        await ctx.add_children([FlowNode(b.name, "c", i) for i in range(6000)], key="first")
        try:
            await ctx.add_children([FlowNode(b.name, "c", i) for i in range(4001)], key="second")
        except InvalidFlowError as exc:
            seen["error"] = str(exc)
        await ctx.add_children([FlowNode(b.name, "c", i) for i in range(4000)], key="third")  # to exactly 10,000
        return "done"

    job = await a.add("parent", None)
    async with workers(queues, {a: {"parent": parent}}):
        assert await job.result(timeout=120) == "done"
    assert "at most 10000 children" in seen["error"]
    assert len((await a.children(job.id)).order) == 10_000
    assert await _total(b) == 10_000  # nothing of the refused call was written


async def test_a_run_killed_between_adopting_and_writing_children_adds_them_on_the_next_run(
    queues: list[Queue],
) -> None:
    """add_children adopts the children (parent's slot) before writing them (theirs). The documented
    pattern decided on `children().order`, which the adoption alone fills: the next run skipped
    add_children and returned [None, None], the children never written. Deciding on `all_ended`, it
    adds them again (only the missing ones are written) and waits."""
    from conveyor.redis import flow_scripts

    a, b, _ = queues
    runs: list[tuple[int, bool]] = []

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        runs.append((len(kids.order), kids.all_ended))
        if len(runs) == 1:  # the first half of add_children, then the process "dies"
            refs = [f"{b.name}:{ctx.job_id}.c0.{i}" for i in range(2)]
            await flow_scripts.adopt(a.client, a.keys, ctx.job_id, ctx.token, refs, "")
            raise RuntimeError("killed between adopting and writing the children")
        if not kids.all_ended:
            await ctx.add_children([FlowNode(b.name, "gen", t) for t in ("x", "y")])
            ctx.wait_for_children()
        return kids.ordered()

    async def gen(ctx: JobContext, data: Any) -> Any:
        return data.upper()

    job = await a.add("parent", None, attempts=2, backoff=0.01)
    async with workers(queues, {a: {"parent": parent}, b: {"gen": gen}}):
        assert await job.result(timeout=60) == ["X", "Y"]
    assert runs == [(0, False), (2, False), (2, True)]  # `order` was filled, the children missing
    assert await _total(b) == 2


@pytest.mark.parametrize("policy", ["fail", "ignore", "continue"])
async def test_cancelling_a_running_child_under_each_policy(queues: list[Queue], policy: str) -> None:
    a, b, c = queues
    started = asyncio.Event()
    seen: list[list[Any]] = []

    async def slow(ctx: JobContext, n: int) -> int:
        started.set()
        await asyncio.Event().wait()  # until the worker cancels the handler
        return n

    async def quick(ctx: JobContext, n: int) -> int:
        return n

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        seen.append([kids.results.get(r, kids.errors.get(r, {}).get("type")) for r in kids.order])
        return "ran"

    root = FlowNode(a.name, "parent", None, on_child_failure=policy,
                    children=[FlowNode(b.name, "slow", 1), FlowNode(c.name, "quick", 2)])
    async with workers(queues, {a: {"parent": parent}, b: {"slow": slow}, c: {"quick": quick}}):
        job = await a.add_flow(root)
        slow_id = (await job.record()).children[0][1]
        await asyncio.wait_for(started.wait(), 60)
        await b.cancel(slow_id)
        await wait_for(lambda: _in_state(b, slow_id, JobState.CANCELLED), 60, what="the child is cancelled")
        if policy == "fail":
            await wait_for(lambda: _in_state(a, job.id, JobState.FAILED), 60, what="the parent fails")
            err = (await job.record()).error
            assert err is not None and err["type"] == "ChildFailed" and err["child"] == f"{b.name}:{slow_id}"
            assert seen == []
        else:
            assert await job.result(timeout=60) == "ran"
            assert len(seen) == 1 and seen[0][0] == "Cancelled"
            if policy == "ignore":
                assert seen[0][1] == 2


async def test_options_a_flow_would_ignore_are_refused_naming_the_node(queues: list[Queue]) -> None:
    """flow-add does not write a parent's delay (a parent is released when its children end): a
    parent's `delay` (or `run_at`) was accepted and silently dropped. (A keyed node was refused
    already: a keyed job takes no job_id.)"""
    from conveyor.errors import InvalidFlowError

    a, b, _ = queues
    keyed = FlowNode(a.name, "p", None, children=[
        FlowNode(b.name, "mid", None, children=[FlowNode(b.name, "leaf", 1, JobOptions(key="k", key_mode="debounce",
                                                                                       key_window=5))])])
    with pytest.raises(InvalidFlowError, match="keyed job") as err:
        await a.add_flow(keyed)
    assert err.value.path == "root.children[0].children[0]"
    delayed = FlowNode(a.name, "p", None, children=[
        FlowNode(b.name, "mid", None, JobOptions(delay=30), children=[FlowNode(b.name, "leaf", 1)])])
    with pytest.raises(InvalidFlowError, match="apply to a leaf") as err:
        await a.add_flow(delayed)
    assert err.value.path == "root.children[0]"
    assert await _total(a) == 0 and await _total(b) == 0
    # a delayed leaf is fine
    job = await a.add_flow(FlowNode(a.name, "p", None, children=[FlowNode(b.name, "leaf", 1, JobOptions(delay=30))]))
    assert (await b.counts())[JobState.DELAYED] == 1 and job.created


async def test_a_dynamic_child_failing_while_its_parent_runs_fails_the_parent_under_fail(queues: list[Queue]) -> None:
    """flow-deliver fails a parent under `fail` only while it waits in waiting-children; a dynamic
    child that failed while the parent was still running (before wait_for_children) was counted and
    then ignored: the parent ran again with the error in place, as under `ignore`. Now waiting for
    children fails it with ChildFailed naming that child; retrying the child carries the flow on."""
    a, b, _ = queues
    bad_fails = {"on": True}
    runs: list[tuple[list[str], list[str]]] = []

    async def bad(ctx: JobContext, n: int) -> int:
        if bad_fails["on"]:
            raise ValueError("bad child")
        return n

    async def ok(ctx: JobContext, n: int) -> int:
        return n

    async def parent(ctx: JobContext, data: Any) -> Any:
        kids = await ctx.children()
        runs.append((sorted(kids.results), sorted(kids.errors)))
        if not kids.all_ended:
            await ctx.add_children([FlowNode(b.name, "bad", 1), FlowNode(b.name, "ok", 2)])

            async def a_child_failed() -> bool:
                return len((await ctx.children()).errors) > 0

            await wait_for(a_child_failed, 60, what="the bad child's failure is counted while the parent runs")
            ctx.wait_for_children()
        return kids.ordered()

    job = await a.add("parent", None)
    async with workers(queues, {a: {"parent": parent}, b: {"bad": bad, "ok": ok}}):
        await wait_for(lambda: _in_state(a, job.id, JobState.FAILED), 60, what="the parent fails")
        rec = await job.record()
        bad_ref = "{}:{}".format(*rec.children[0])
        assert rec.error is not None and rec.error["type"] == "ChildFailed" and rec.error["child"] == bad_ref
        assert len(runs) == 1
        bad_fails["on"] = False
        await b.retry(bad_ref.partition(":")[2])
        await wait_for(lambda: _in_state(a, job.id, JobState.COMPLETED), 60, what="the parent carries on")
        assert await job.result(timeout=60) == [1, 2]
    assert len(runs) == 2


async def test_a_node_whose_children_only_share_a_prefix_with_the_existing_ones_is_a_conflict(
    queues: list[Queue],
) -> None:
    """An existing node counted as the same node when its children's list merely began with the
    node's (compared as text): `b:k-1` matched an existing `b:k-10`, so the tree was taken as sent
    again, and its child k-1 was written under a parent that does not know it (its end set aside, the
    parent waiting for k-10). Now the children are compared reference by reference: a conflict,
    nothing written."""
    a, b, _ = queues
    first = FlowNode(a.name, "p", None, JobOptions(job_id="same-root"),
                     children=[FlowNode(b.name, "sq", 1, JobOptions(job_id="k-10"))])
    await a.add_flow(first)
    other = FlowNode(a.name, "p", None, JobOptions(job_id="same-root"),
                     children=[FlowNode(b.name, "sq", 1, JobOptions(job_id="k-1"))])
    with pytest.raises(IdempotencyConflictError, match="same-root"):
        await a.add_flow(other)
    assert await b.get_job("k-1") is None
    assert await _total(b) == 1
