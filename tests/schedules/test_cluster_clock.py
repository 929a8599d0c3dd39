"""On a Redis Cluster the scheduler reads the time from the node that holds the `{schedules}` slot,
the node every schedule script runs on (counted per node with INFO commandstats), whichever node
the client would pick for a command without a key."""

from __future__ import annotations

import redis.asyncio as aredis
from redis.asyncio.cluster import RedisCluster

from conveyor.redis.connection import connect
from conveyor.schedules import Scheduler
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule
from conveyor.testing import RedisClusterServers
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
