"""An outbox record the mover cannot deliver (edited by hand, written by another client) is set
aside, logged once and counted, and never tried again, while the valid records of the same batch,
for the same parent, are delivered."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from conveyor import JobState, Queue, Worker
from conveyor.flows import FlowNode
from conveyor.flows.mover import OutboxMover
from conveyor.options import JobOptions
from conveyor.worker import JobContext
from tests.conftest import running, wait_for


async def test_a_bad_record_is_set_aside_and_its_siblings_are_delivered(
        queues: list[Queue], caplog: pytest.LogCaptureFixture) -> None:
    """Before, a record whose outcome the delivery script refused made the mover drop every record
    of that parent's batch (the valid children's ends included), so the parent waited for ever; a
    record of no known kind made the mover raise on every pass."""
    a, b, _ = queues

    async def sq(ctx: JobContext, n: int) -> int:
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    root = FlowNode(a.name, "parent", None, JobOptions(job_id="bad-rec"),
                    children=[FlowNode(b.name, "sq", 1), FlowNode(b.name, "sq", 2)])
    job = await a.add_flow(root)
    ref = f"{a.name}:bad-rec"

    # The children end while no mover runs: their records wait in b's outbox.
    quiet = Worker(b, {"sq": sq})

    async def never() -> None:
        await asyncio.Event().wait()

    quiet.mover.run = never  # type: ignore[method-assign]
    async with running(quiet):
        await wait_for(lambda: _outbox_size(b, 2), timeout=60, what="both children ended")
    deep = "[" * 1010 + "]" * 1010  # JSON to Python, too deep for the script's decoder
    bad = {
        "ghost-1": f"C|{ref}|{{not json",        # same parent, outcome not JSON
        "ghost-2": f"C|{ref}|{deep}",            # same parent, refused by the script itself
        "ghost-3": "C|no such queue!:x|1",       # a parent reference naming no queue
        "ghost-4": "Zgarbage",                   # no record at all
        "!ghost-5": "K|",                        # a cancellation without its children
    }
    await b.client.hset(b.keys.outbox, mapping=bad)

    caplog.set_level(logging.WARNING, logger="conveyor.flows.mover")
    movers = Worker(b, {"sq": sq})
    async with running(Worker(a, {"parent": parent})), running(movers):
        assert await job.result(timeout=60) == [1, 4]
        await wait_for(lambda: _outbox_size(b, 0), timeout=60, what="the outbox emptied")
        movers.mover.kick.set()  # another pass: nothing is tried again
        await wait_for(lambda: movers.mover.kick.is_set() is False, timeout=30, what="the mover looked again")
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.pending_children == 0
    assert movers.mover.set_aside == len(bad)
    assert await b.client.hgetall(b.keys.outbox_rejects) == bad
    for field in bad:
        lines = [r for r in caplog.records if repr(field) in r.getMessage()]
        assert len(lines) == 1, f"{field} logged once"
        assert "not json" not in lines[0].getMessage(), "no record content in the log"


async def _outbox_size(q: Queue, n: int) -> bool:
    return int(await q.client.hlen(q.keys.outbox)) == n


async def test_a_parent_key_of_another_type_sets_its_records_aside(queues: list[Queue]) -> None:
    """Before, a parent whose key held something other than a job's record (a string written over
    it) made the delivery script fail on every pass: the mover loop ended and started again with a
    growing backoff for ever, the record was never dropped, and the records of other parents waited
    behind it. Now its records are set aside and the other parents are served."""
    a, b, _ = queues

    async def sq(ctx: JobContext, n: int) -> int:
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    broken = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "sq", 2)]))
    fine = await a.add_flow(FlowNode(a.name, "parent", None, children=[FlowNode(b.name, "sq", 3)]))
    await a.client.delete(a.keys.job(broken.id))
    await a.client.set(a.keys.job(broken.id), "not a hash")
    movers = Worker(b, {"sq": sq})
    async with running(Worker(a, {"parent": parent})), running(movers):
        assert await fine.result(timeout=60) == [9]
        await wait_for(lambda: _outbox_size(b, 0), timeout=60, what="the outbox emptied")
        assert movers.mover.set_aside == 1
        assert all(not task.done() for task in movers.loop_tasks.values()), "the mover loop lives"
    assert len(await b.client.hkeys(b.keys.outbox_rejects)) == 1
    await a.client.delete(a.keys.job(broken.id))


async def test_a_record_naming_no_child_of_its_parent_is_set_aside(
        queues: list[Queue], caplog: pytest.LogCaptureFixture) -> None:
    """Before, the delivery script counted any record naming an existing parent: a hand-written or
    stale record for a child the parent does not have took `pending` down (the parent ran before
    its real children ended) or, as a failure, failed the parent; one naming a plain job wrote a
    result into it, and one naming a hash that is not a job was dropped unseen. Now the script
    counts nothing for them and the mover sets them aside; the real children are delivered."""
    a, b, _ = queues

    async def sq(ctx: JobContext, n: int) -> int:
        return n * n

    async def parent(ctx: JobContext, data: Any) -> Any:
        return (await ctx.children()).ordered()

    job = await a.add_flow(FlowNode(a.name, "parent", None, JobOptions(job_id="kin"),
                                    children=[FlowNode(b.name, "sq", 1), FlowNode(b.name, "sq", 2)]))
    plain = await a.add("parent", None, delay=3600)  # a job, but nobody's parent
    await a.client.hset(a.keys.job("not-a-job"), "x", "1")
    bad = {
        "stranger-1": f"C|{a.name}:kin|99",
        "stranger-2": f'F|{a.name}:kin|{{"type":"Boom","message":"x"}}',
        "kin.1 kin.2": f"C|{a.name}:kin|99",  # two of its children's ids, as one field
        "stranger-3": f"C|{a.name}:{plain.id}|1",
        "stranger-4": f"C|{a.name}:not-a-job|1",
    }
    await b.client.hset(b.keys.outbox, mapping=bad)

    caplog.set_level(logging.WARNING, logger="conveyor.flows.mover")
    mover = OutboxMover(b.client, b.keys, 1000, None)
    await mover.drain()  # before any child ends: only the records above are there
    assert await b.client.hlen(b.keys.outbox) == 0
    rec = await job.record()
    assert rec.state is JobState.WAITING_CHILDREN and rec.pending_children == 2, "nothing counted"
    assert mover.set_aside == len(bad)
    async with running(Worker(a, {"parent": parent})), running(Worker(b, {"sq": sq})):
        assert await job.result(timeout=60) == [1, 4]
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.pending_children == 0
    assert await b.client.hgetall(b.keys.outbox_rejects) == bad
    assert await a.client.hgetall(a.keys.job("not-a-job")) == {"x": "1"}
    assert not [f for f in await a.client.hkeys(a.keys.job(plain.id)) if f.startswith("r:")]
    counted = [e.fields.get("child") for e in await a.read_events("0-0") if e.type == "child"]
    assert sorted(counted) == [f"{b.name}:kin.1", f"{b.name}:kin.2"]
    for field in bad:
        assert len([r for r in caplog.records if repr(field) in r.getMessage()]) == 1, f"{field} logged once"
    await a.client.delete(a.keys.job("not-a-job"))
