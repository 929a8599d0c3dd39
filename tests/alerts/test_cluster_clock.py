"""On a Redis Cluster an alerts pass measures each queue at now on the clock of the node holding it
(each partition's node, for a partitioned queue), not at the time of the alert state's node nor the
scheduler's: counted per node with INFO commandstats, the queues on the nodes that hold neither the
alert state nor the schedules, commands without a key sent to the alert state's node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from conveyor.alerts import parse_rule
from conveyor.alerts.evaluator import AlertEvaluator, alerts_builtin
from conveyor.alerts.rules import RuleBase
from conveyor.alerts.store import AlertStore
from conveyor.partitions import parts_of
from conveyor.queue import Queue
from conveyor.redis.connection import connect
from conveyor.redis.keys import AlertKeys
from conveyor.schedules import Scheduler, ScheduleStore
from conveyor.schedules.model import ALERTS_ID
from conveyor.testing import RedisClusterServers, RedisServer
from tests.cluster_clocks import counting_time, queue_on
from tests.conftest import wait_for

CH = [{"type": "email", "to": ["ops@example.com"]}]
# The kinds that compare a time with a queue's keys: the oldest waiting job's enqueue time, the
# finished sets' scores, the events stream's ids.
KINDS: dict[str, dict[str, Any]] = {
    "oldest_waiting": {"threshold_s": 3600},
    "failure_rate": {"threshold": 0.5},
    "stalled_jobs": {},
}


@dataclass
class Setup:
    client: RedisCluster
    prefix: str
    state_node: RedisServer
    a: RedisServer  # holds the plain queue and the first partition
    b: RedisServer  # holds the second partition
    queues: list[Queue]

    def rules(self, kinds: list[str]) -> list[RuleBase]:
        return [parse_rule({"kind": k, "id": f"{k}-{q.name}", "queue": q.name, "channels": CH, **KINDS[k]})
                for k in kinds for q in self.queues]


@pytest.fixture
async def setup(cluster_servers: RedisClusterServers, prefix: str) -> AsyncIterator[Setup]:
    client = connect(cluster_servers.url)
    assert isinstance(client, RedisCluster)
    await client.initialize()
    state_node = cluster_servers.owner(AlertKeys(prefix).state)
    assert cluster_servers.owner(ScheduleStore(client, prefix).keys.claims) is state_node  # slots of 3 nodes
    a, b = [s for s in cluster_servers.servers if s is not state_node]
    plain = queue_on(cluster_servers, client, prefix, [a])
    partitioned = queue_on(cluster_servers, client, prefix, [a, b], partitions=2)
    try:
        await partitioned.register()  # its layout, which the pass finds it by
        for part in parts_of(plain) + parts_of(partitioned):  # a waiting job in each, so its age is read
            await part.add("t", None)
        yield Setup(client, prefix, state_node, a, b, [plain, partitioned])
    finally:
        await plain.obliterate(force=True)
        await partitioned.obliterate(force=True)
        await client.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_pass_measures_each_queue_at_the_clock_of_its_node(
    cluster_servers: RedisClusterServers, setup: Setup, kind: str
) -> None:
    evaluator = AlertEvaluator(setup.client, setup.prefix, declared=setup.rules([kind]))
    await evaluator.sync()
    async with counting_time(cluster_servers, setup.client, default=setup.state_node) as calls:
        report = await evaluator.run()
    assert report.rules == 2 and report.errors == 0
    # One read per queue or partition on its own node: the plain queue and a partition on a, one on b.
    assert calls[setup.a.port] >= 2 and calls[setup.b.port] >= 1, f"{kind}: {calls}"


async def test_a_scheduled_pass_measures_each_queue_at_the_clock_of_its_node(
    cluster_servers: RedisClusterServers, setup: Setup
) -> None:
    """The scheduler hands its built-ins its own time, the `{schedules}` node's clock: the pass
    reads the clocks of the nodes whose keys it compares instead."""
    builtin = alerts_builtin(setup.client, setup.prefix, setup.rules(list(KINDS)), 3600.0)
    scheduler = Scheduler(setup.client, prefix=setup.prefix, maintenance_interval_s=None, builtins=[builtin])
    alerts = AlertStore(setup.client, setup.prefix)
    try:
        await scheduler.sync()
        assert builtin.setup is not None
        await builtin.setup()

        async def evaluated() -> bool:  # every rule, and the run has ended
            states = [info.state for info in await alerts.all()]
            return (len(states) == 6 and all(s.evaluated_ms is not None and s.error is None for s in states)
                    and not scheduler._background)

        async with counting_time(cluster_servers, setup.client, default=setup.state_node) as calls:
            await scheduler.store.run_now(ALERTS_ID)
            await scheduler.run_due()
            await wait_for(evaluated, timeout=60, what="the alerts pass")
    finally:
        await scheduler.close()
    assert calls[setup.a.port] >= 2 and calls[setup.b.port] >= 1, calls
