"""On a Redis Cluster the scheduler reads the time from the node that holds the `{schedules}` slot,
the node every schedule script runs on (counted per node with INFO commandstats), whichever node
the client would pick for a command without a key."""

from __future__ import annotations

import time

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from conveyor.partitions import parts_of
from conveyor.redis.connection import connect
from conveyor.schedules import MAINTENANCE_ID, Scheduler, ScheduleStore
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule
from conveyor.testing import RedisClusterServers
from tests.cluster_clocks import counting_time, queue_on
from tests.conftest import wait_for


async def _calls(node: aredis.Redis) -> dict[str, int]:
    stats = await node.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()
            if name in ("cmdstat_time", "cmdstat_eval", "cmdstat_evalsha")}


async def test_the_scheduler_reads_the_clock_of_the_node_holding_the_schedules(
    cluster_servers: RedisClusterServers, prefix: str
) -> None:
    runs: list[int] = []

    async def run(now_ms: int) -> None:
        runs.append(now_ms)

    client = connect(cluster_servers.url)
    assert isinstance(client, RedisCluster)
    scheduler = Scheduler(client, prefix=prefix, maintenance_interval_s=None, builtins=[
        Builtin(builtin_schedule("conveyor-test", "conveyor.test", 3600.0, ScheduleKind.ALERTS), run)])
    owner = cluster_servers.owner(scheduler.store.keys.claims)
    others = [s for s in cluster_servers.servers if s is not owner]
    nodes = {s.port: aredis.Redis(port=s.port, decode_responses=True) for s in cluster_servers.servers}
    try:
        await client.initialize()
        # Commands without a key go to the client's default node: make it one that does not hold them.
        default = client.get_node("127.0.0.1", others[0].port)
        assert default is not None
        client.set_default_node(default)
        for node in nodes.values():
            await node.config_resetstat()
        await scheduler.sync()
        await scheduler.store.run_now("conveyor-test")
        await scheduler.run_due()
        await wait_for(lambda: len(runs) == 1 and not scheduler._background, what="the built-in run")
        await scheduler.run_due()
        calls = {port: await _calls(node) for port, node in nodes.items()}
    finally:
        await scheduler.close()
        for node in nodes.values():
            await node.aclose()
        await client.aclose()
    for other in others:
        assert calls[other.port] == {}, f"node {other.port} answered {calls[other.port]}"
    # Every read of the clock (the TIME inside the clock script counts there) and every script.
    assert calls[owner.port].get("time", 0) >= 3  # two passes' claims and the advance's
    assert calls[owner.port].get("evalsha", 0) + calls[owner.port].get("eval", 0) >= 6


async def test_maintenance_trims_each_queue_at_the_clock_of_its_node(
    cluster_servers: RedisClusterServers, prefix: str
) -> None:
    """The scheduler's time is the `{schedules}` node's; each queue, and each partition, is trimmed
    at now on the clock of its own node, the one that stamped its finish times and event ids."""
    client = connect(cluster_servers.url)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    scheduler = Scheduler(client, prefix=prefix, maintenance_interval_s=3600)
    owner = cluster_servers.owner(scheduler.store.keys.claims)
    a, b = [s for s in cluster_servers.servers if s is not owner]
    plain = queue_on(cluster_servers, client, prefix, [a])
    partitioned = queue_on(cluster_servers, client, prefix, [a, b], partitions=2)
    store = ScheduleStore(client, prefix)
    try:
        await plain.register()
        await partitioned.register()
        two_days_ago = int(time.time() * 1000) - 2 * 86_400_000
        for part in parts_of(plain) + parts_of(partitioned):  # a record past the default 24 h retention
            await client.hset(part.keys.job("old"), mapping={"state": "completed", "finished": two_days_ago})
            await client.zadd(part.keys.completed, {"old": two_days_ago})
        await scheduler.sync()
        async with counting_time(cluster_servers, client, default=owner) as calls:
            await store.run_now(MAINTENANCE_ID)
            await scheduler.run_due()

            async def trimmed() -> bool:  # and the run has ended
                counts = [await client.zcard(p.keys.completed) for p in parts_of(plain) + parts_of(partitioned)]
                return not any(counts) and not scheduler._background

            await wait_for(trimmed, timeout=60, what="the maintenance run trimmed every queue")
    finally:
        await scheduler.close()
        await plain.obliterate(force=True)
        await partitioned.obliterate(force=True)
        await client.aclose()
    # One read per queue or partition on its own node: the plain queue and a partition on a, one on b.
    assert calls[a.port] >= 2 and calls[b.port] >= 1, calls
