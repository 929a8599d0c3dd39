"""Helpers for the Cluster clock tests: queues placed on chosen nodes, and the TIME commands each node
ran (a script's included), counted with INFO commandstats."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from conveyor.partitions import PartitionedQueue, parts_of
from conveyor.queue import Queue
from conveyor.testing import RedisClusterServers, RedisServer


def queue_on(
    cluster: RedisClusterServers, client: RedisCluster, prefix: str, nodes: Sequence[RedisServer],
    partitions: int | None = None,
) -> Queue:
    """A new queue (partitioned when `partitions` is given) whose i-th partition lies on nodes[i]."""
    for _ in range(10_000):
        name = f"clk-{uuid.uuid4().hex[:8]}"
        q = (Queue(name, redis=client, prefix=prefix) if partitions is None
             else PartitionedQueue(name, partitions=partitions, redis=client, prefix=prefix))
        if [cluster.owner(p.keys.meta) for p in parts_of(q)] == list(nodes):
            return q
    raise AssertionError(f"no queue name found on nodes {[n.port for n in nodes]}")


async def _time_calls(node: aredis.Redis) -> int:
    stats = await node.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


@asynccontextmanager
async def counting_time(
    cluster: RedisClusterServers, client: RedisCluster, default: RedisServer
) -> AsyncIterator[dict[int, int]]:
    """Makes `default` the node that commands without a key go to, resets every node's stats, and on
    exit fills the yielded dict with the TIME commands each node (by port) ran meanwhile."""
    node = client.get_node("127.0.0.1", default.port)
    assert node is not None
    client.set_default_node(node)
    nodes = {s.port: aredis.Redis(port=s.port, decode_responses=True) for s in cluster.servers}
    calls: dict[int, int] = {}
    try:
        for n in nodes.values():
            await n.config_resetstat()
        yield calls
        for port, n in nodes.items():
            calls[port] = await _time_calls(n)
    finally:
        for n in nodes.values():
            await n.aclose()
