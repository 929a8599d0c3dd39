"""On a Redis Cluster, every read of the Redis clock that is compared with keys goes to the node that
holds those keys (the clock their scripts read), not to the node a plain TIME would go to: counted per
node with INFO commandstats, with the client's default node set to one that does not hold the keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from conveyor import Queue
from conveyor.alerts.evaluator import AlertEvaluator
from conveyor.costs import CostLedger
from conveyor.dashboard.stats import queue_history
from conveyor.limits import admin as limits_admin
from conveyor.ops.common import Target
from conveyor.ops.doctor import check_clocks
from conveyor.redis.clock import clock_offset_ms, redis_now_ms
from conveyor.redis.connection import connect
from conveyor.redis.keys import AlertKeys, CostKeys, WorkerRegistryKeys
from conveyor.service.registry import RegistryWriter
from conveyor.testing import RedisClusterServers
from conveyor.views import oldest_waiting_age_ms, throughput


@dataclass
class Setup:
    client: RedisCluster
    prefix: str
    queue: Queue


Reader = Callable[[Setup], tuple[str, Awaitable[object]]]  # (a key it compares times with, the read)

READERS: dict[str, Reader] = {
    "ledger today": lambda s: (CostKeys(s.prefix).cfg, CostLedger(s.client, s.prefix).today()),
    "group limits": lambda s: (s.queue.keys.limits, limits_admin.group_state(s.queue, "g1")),
    "alerts pass": lambda s: (AlertKeys(s.prefix).state, AlertEvaluator(s.client, s.prefix).run()),
    "throughput": lambda s: (s.queue.keys.completed, throughput(s.queue)),
    "oldest waiting": lambda s: (s.queue.keys.ready, oldest_waiting_age_ms(s.queue)),
    "dashboard history": lambda s: (s.queue.keys.completed, queue_history(s.queue)),
    "registry beat": lambda s: (WorkerRegistryKeys(s.prefix).index,
                                RegistryWriter(s.client, s.prefix, "w1", dict, 10.0).beat()),
    "doctor clock skew": lambda s: (WorkerRegistryKeys(s.prefix).index,
                                    check_clocks(Target(s.client, s.prefix, "cluster"))),
    "clock offset": lambda s: (s.queue.keys.meta, clock_offset_ms(s.client, s.queue.keys.meta)),
    "now": lambda s: (s.queue.keys.meta, redis_now_ms(s.client, s.queue.keys.meta)),
}


async def _time_calls(node: aredis.Redis) -> int:
    """TIME commands the node ran, a script's included."""
    stats = await node.info("commandstats")
    return int(stats.get("cmdstat_time", {}).get("calls", 0))


@pytest.fixture
async def setup(cluster_servers: RedisClusterServers) -> AsyncIterator[Setup]:
    client = connect(cluster_servers.url)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    prefix = f"ck{uuid.uuid4().hex[:10]}"
    queue = Queue(f"clock-{uuid.uuid4().hex[:8]}", redis=client, prefix=prefix)
    await queue.add("t", None)  # a waiting job, so the oldest one's age is read
    try:
        yield Setup(client, prefix, queue)
    finally:
        await queue.obliterate(force=True)
        await client.aclose()


@pytest.mark.parametrize("reader", READERS)
async def test_the_clock_is_read_on_the_node_holding_the_keys(
    cluster_servers: RedisClusterServers, setup: Setup, reader: str
) -> None:
    nodes = {s.port: aredis.Redis(port=s.port, decode_responses=True) for s in cluster_servers.servers}
    try:
        key, read = READERS[reader](setup)
        owner = cluster_servers.owner(key)
        others = [s for s in cluster_servers.servers if s is not owner]
        # Commands without a key go to the client's default node: make it one that does not hold the keys.
        default = setup.client.get_node("127.0.0.1", others[0].port)
        assert default is not None
        setup.client.set_default_node(default)
        for node in nodes.values():
            await node.config_resetstat()
        await read
        calls = {port: await _time_calls(node) for port, node in nodes.items()}
    finally:
        for node in nodes.values():
            await node.aclose()
    assert {s.port: calls[s.port] for s in others} == {s.port: 0 for s in others}, f"{reader}: {calls}"
    assert calls[owner.port] >= 1, f"{reader}: {calls}"
