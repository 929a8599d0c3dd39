"""Cancelling a parent of a wide fan-out cancels its children in batches: one script call per batch of
children on a queue, not one round trip per child (docs/flows.md, "The hand-over")."""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster

from conveyor import JobState, Queue
from conveyor.flows import FlowNode
from conveyor.flows.mover import OutboxMover
from conveyor.redis import flow_scripts
from conveyor.redis.connection import RedisClient

N_B, N_C = 200, 100


async def _script_calls(client: RedisClient) -> int:
    """EVALSHA and EVAL calls the server(s) have served so far (INFO commandstats, every node)."""
    if isinstance(client, RedisCluster):
        infos = [await client.info("commandstats", target_nodes=node) for node in client.get_nodes()]
    else:
        infos = [await client.info("commandstats")]
    total = 0
    for info in infos:
        for name in ("cmdstat_evalsha", "cmdstat_eval"):
            stat: Any = info.get(name)
            total += int(stat["calls"]) if stat else 0
    return total


async def test_cancelling_a_wide_fan_out_takes_a_few_script_calls(queues: list[Queue], client: RedisClient) -> None:
    """Before, the mover cancelled a cancelled parent's children one `cancel` call each: 300 children,
    300 sequential round trips (10,000 for the widest fan-out). Now the children of one queue are
    cancelled in one call per batch."""
    a, b, c = queues
    children = [FlowNode(b.name, "leaf", i) for i in range(N_B)] + [FlowNode(c.name, "leaf", i) for i in range(N_C)]
    job = await a.add_flow(FlowNode(a.name, "sum", None, children=children))
    assert await a.cancel(job.id) is JobState.CANCELLED
    rec = await job.record()
    assert len(rec.children) == N_B + N_C
    mover = OutboxMover(client, a.keys, 1000, None)
    before = await _script_calls(client)
    await mover.drain()
    calls = await _script_calls(client) - before
    assert calls <= 10, f"{calls} script calls to cancel {N_B + N_C} children"
    assert await client.hlen(a.keys.outbox) == 0
    for q, n in ((b, N_B), (c, N_C)):
        assert (await q.counts())[JobState.CANCELLED] == n
    for q_name, child in rec.children[:3] + rec.children[-3:]:
        q = b if q_name == b.name else c
        assert await q.get_state(child) is JobState.CANCELLED
        assert await client.hget(q.keys.job(child), "pcx") is not None  # cancelled with its parent
    # the children's own outboxes tell the parent (each once): a resent batch changes nothing
    assert await client.hlen(b.keys.outbox) == N_B
    ids = [child for q_name, child in rec.children if q_name == b.name]
    events = await client.xlen(b.keys.events)
    run = str(await client.hget(a.keys.job(job.id), "ts"))
    again = await flow_scripts.cancel_kids(client, b.keys, ids, run, 1000)
    assert set(again) == {flow_scripts.NOTHING_TO_CANCEL}
    assert await client.xlen(b.keys.events) == events


async def test_a_child_whose_key_is_not_a_job_is_skipped_and_its_siblings_cancelled(
    queues: list[Queue], client: RedisClient
) -> None:
    a, b, _ = queues
    job = await a.add_flow(FlowNode(a.name, "sum", None, children=[FlowNode(b.name, "leaf", i) for i in range(5)]))
    rec = await job.record()
    spoiled = rec.children[2][1]
    await client.delete(b.keys.job(spoiled))
    await client.rpush(b.keys.job(spoiled), "not a job")
    assert await a.cancel(job.id) is JobState.CANCELLED
    await OutboxMover(client, a.keys, 1000, None).drain()
    for _, child in rec.children:
        if child != spoiled:
            assert await b.get_state(child) is JobState.CANCELLED
    assert await client.lrange(b.keys.job(spoiled), 0, -1) == ["not a job"]
