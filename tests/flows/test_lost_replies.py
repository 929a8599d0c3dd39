"""Lost replies on the flow trips: flow-add, flow-deliver and flow-ack run on the server, then their
reply is dropped and the connection reset (tests/proxy.py). Each trip is sent again (or the tree sent
again) and nothing happens twice: every child counted once, the parent run once with every result."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conveyor import Queue
from conveyor.errors import ConnectionFailedError
from conveyor.flows import FlowNode
from conveyor.flows.mover import OutboxMover
from conveyor.options import JobOptions
from conveyor.redis import flow_scripts
from conveyor.redis.connection import connect
from conveyor.redis.scripts import Script, all_script_files
from conveyor.testing import RedisServer
from conveyor.worker import JobContext
from tests.conftest import wait_for
from tests.flows.conftest import workers
from tests.proxy import TcpProxy


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    with TcpProxy(redis_server.port) as p:
        yield p


@pytest.fixture
async def pair(
    redis_server: RedisServer, proxy: TcpProxy, qname: str
) -> AsyncIterator[tuple[list[Queue], list[Queue]]]:
    """(direct queues, the same queues through the proxy): parents, children."""
    direct_client, proxied_client = connect(redis_server.url), connect(proxy.url)
    direct = [Queue(qname + s, redis=direct_client) for s in ("-p", "-c")]
    proxied = [Queue(qname + s, redis=proxied_client) for s in ("-p", "-c")]
    yield direct, proxied
    for q in direct:
        await q.obliterate(force=True)
    await proxied_client.aclose()
    await direct_client.aclose()


@pytest.mark.parametrize("trip", ["flow-add", "flow-deliver", "flow-ack"])
async def test_a_lost_reply_on_a_flow_trip_changes_nothing_twice(
    pair: tuple[list[Queue], list[Queue]], proxy: TcpProxy, trip: str
) -> None:
    (dp, dc), (pp, pc) = pair
    script = {"flow-add": flow_scripts._ADD, "flow-deliver": flow_scripts._DELIVER, "flow-ack": flow_scripts._ACK}[trip]
    runs: Counter[str] = Counter()

    async def child(ctx: JobContext, n: int) -> int:
        runs[f"child {n}"] += 1
        return n * 10

    async def parent(ctx: JobContext, data: Any) -> Any:
        runs["parent"] += 1
        return (await ctx.children()).ordered()

    root = FlowNode(dp.name, "parent", None, JobOptions(job_id="lost-1"),
                    children=[FlowNode(dc.name, "child", i) for i in range(4)])
    await dp.client.script_load(script.source)  # so the call cut is the one that runs it, not a NOSCRIPT
    proxy.lose_reply(script.sha.encode(), nth=(1,))
    if trip == "flow-add":
        with pytest.raises(ConnectionFailedError):
            await pp.add_flow(root)  # it was written; the client cannot know
        job = await pp.add_flow(root)  # so it sends the tree again
        assert job.id == "lost-1" and not job.created
    else:
        job = await pp.add_flow(root)
    assert sum((await dc.counts()).values()) == 4
    async with workers([pp, pc], {pp: {"parent": parent}, pc: {"child": child}}):
        assert await job.result(timeout=60) == [0, 10, 20, 30]

        async def outbox_empty() -> bool:
            return await dc.client.hlen(dc.keys.outbox) == 0

        await wait_for(outbox_empty, 60, what="every outbox record deleted")
    assert proxy.cuts == 1
    assert runs == Counter({"parent": 1, **{f"child {i}": 1 for i in range(4)}})
    counted = [e.fields.get("child") for e in await dp.read_events("0-0") if e.type == "child"]
    assert sorted(Counter(counted).values()) == [1, 1, 1, 1]  # each child counted once
    rec = await job.record()
    assert rec.pending_children == 0 and rec.attempts_made == 1


@pytest.mark.parametrize("kind", ["not a flow record", "not a child of its parent"])
async def test_a_set_aside_whose_reply_is_lost_is_logged_and_counted_once(
    pair: tuple[list[Queue], list[Queue]], proxy: TcpProxy, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, the mover logged and counted a record it set aside, then wrote it to <p>outbox-bad
    and deleted it from the outbox in later round trips: when one of them ran but its reply was lost,
    the mover's next pass found the record again and logged and counted it a second time. Now the
    record moves from the outbox to <p>outbox-bad in one script, and a set-aside whose reply was
    lost is confirmed on the next pass (the record is in <p>outbox-bad, no longer in the outbox):
    logged and counted once."""
    (dp, dc), (_, pc) = pair
    plain = await dp.add("parent", None, delay=3600)  # a job, but nobody's parent
    record = "Zgarbage" if kind == "not a flow record" else f"C|{dp.name}:{plain.id}|1"
    await dc.client.hset(dc.keys.outbox, "ghost", record)
    for name in all_script_files():  # so the call cut is the one that runs, not a NOSCRIPT
        await dc.client.script_load(Script.load(name).source)
    proxy.lose_reply(dc.keys.outbox_rejects.encode(), nth=(1,))  # the first call naming outbox-bad
    caplog.set_level(logging.WARNING, logger="conveyor.flows.mover")
    mover = OutboxMover(pc.client, pc.keys, 1000, None)
    task = asyncio.create_task(mover.run())
    try:
        async def set_aside() -> bool:
            return (proxy.cuts == 1 and mover.set_aside >= 1 and await dc.client.hlen(dc.keys.outbox) == 0
                    and await dc.client.hget(dc.keys.outbox_rejects, "ghost") == record)

        await wait_for(set_aside, 60, what="the record set aside after the lost reply")
        mover.kick.set()  # another pass: nothing is set aside again
        await wait_for(lambda: not mover.kick.is_set(), 30, what="the mover looked again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert mover.set_aside == 1
    lines = [r for r in caplog.records if "'ghost'" in r.getMessage() and "set aside" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert await dc.client.hgetall(dc.keys.outbox_rejects) == {"ghost": record}


@pytest.mark.parametrize("trip", ["flow-adopt", "flow-add"])
async def test_a_lost_reply_while_adding_children_does_not_fail_the_run(
    pair: tuple[list[Queue], list[Queue]], proxy: TcpProxy, trip: str
) -> None:
    """ctx.add_children is safe to send again (the children's ids are fixed and an adopted child is not
    adopted twice), but a reply lost on the adoption or on the children's write failed the run with
    ConnectionFailedError: a job with no attempt left failed with its children adopted and never
    written, and retrying it left it in waiting-children for children that would never end. Now the
    call rides the fault as ctx.step does: the children run once and the parent runs with them."""
    (dp, _), (pp, pc) = pair
    script = {"flow-adopt": flow_scripts._ADOPT, "flow-add": flow_scripts._ADD}[trip]
    runs: Counter[str] = Counter()

    async def child(ctx: JobContext, n: int) -> int:
        runs[f"child {n}"] += 1
        return n * 10

    async def parent(ctx: JobContext, data: Any) -> Any:
        runs["parent"] += 1
        kids = await ctx.children()
        if not kids.all_ended:
            await ctx.add_children([FlowNode(pc.name, "child", i) for i in range(3)])
            ctx.wait_for_children()
        return kids.ordered()

    await dp.client.script_load(script.source)  # so the call cut is the one that runs it, not a NOSCRIPT
    job = await pp.add("parent", None, attempts=1)
    proxy.lose_reply(script.sha.encode(), nth=(1,))
    async with workers([pp, pc], {pp: {"parent": parent}, pc: {"child": child}}):
        assert await job.result(timeout=60) == [0, 10, 20]
    assert proxy.cuts == 1
    assert runs == Counter({"parent": 2, **{f"child {i}": 1 for i in range(3)}})
