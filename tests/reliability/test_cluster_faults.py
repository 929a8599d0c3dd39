"""Cluster faults: a restarted slot owner (CLUSTERDOWN while the cluster heals) is ridden through, and
the client never sends a script again by itself after a timeout (it may have run)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import redis as syncredis
import redis.asyncio as aioredis

from conveyor import ConnectionFailedError, JobState, Queue, Worker
from conveyor.redis.connection import connect
from conveyor.testing import RedisClusterServers
from tests.conftest import running, wait_for
from tests.reliability.helpers import FAST, Gate, all_completed, loops_alive, queues


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    """A Cluster of its own (its nodes get killed), persisting every write so a restart loses nothing."""
    with RedisClusterServers(extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as c:
        yield c


async def test_a_restarted_slot_owner_is_ridden_through(cluster: RedisClusterServers, qname: str) -> None:
    direct, worker_queue = queues(cluster.url, qname)
    gate = Gate()
    worker = Worker(worker_queue, {"j": gate.handler}, concurrency=2, **FAST)  # type: ignore[arg-type]
    jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(4)])
    owner = cluster.owner(direct.keys.meta)
    async with running(worker, grace_s=10):
        await wait_for(lambda: worker.active == 2, what="two jobs running")
        owner.stop()
        gate.open()  # outcomes meet a dead node, then CLUSTERDOWN while the cluster heals
        await wait_for(lambda: worker.pump_failures >= 2, what="trips met the dead node")
        other = next(s for s in cluster.servers if s is not owner)
        await wait_for(lambda: _cluster_failed(other.port), timeout=30, what="the others see the cluster down")
        await asyncio.to_thread(owner.start, owner.port)
        await wait_for(lambda: all_completed(direct, [j.id for j in jobs]), timeout=60, what="all done")
        assert loops_alive(worker), "no loop crashed"
    await direct.client.aclose()
    await worker_queue.client.aclose()


# A script that keeps the node busy for 1.5 s (under busy-reply-threshold: others just wait).
SLOW = ("local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] while true do "
        "local n = redis.call('TIME') if n[1] * 1000000 + n[2] - t0 > 1500000 then return 1 end end")


async def test_a_script_whose_reply_timed_out_is_not_sent_again(cluster: RedisClusterServers, qname: str) -> None:
    queue = Queue(qname, redis=connect(cluster.url, socket_timeout=0.5))
    await queue.add("warm-up")  # the client knows the slots; the script is cached
    owner = cluster.owner(queue.keys.meta)
    probe = aioredis.Redis(port=owner.port)
    await probe.ping()  # connected before the node gets busy
    slow = threading.Thread(target=lambda: syncredis.Redis(port=owner.port).eval(SLOW, 0), daemon=True)
    slow.start()
    await wait_for(lambda: _busy(probe), what="the node is busy")
    # The enqueue reaches the node and waits behind the slow script; its reply times out. A client
    # that retried by itself would enqueue a second copy once the node is free again.
    with pytest.raises(ConnectionFailedError):
        await queue.add("once")
    slow.join(10)
    reader = Queue(qname, redis=connect(cluster.url))
    await wait_for(lambda: _quiet(reader), what="the node answers again")
    jobs = [r.name for r in (await reader.list_jobs(JobState.WAITING)).jobs]
    assert sorted(jobs) == ["once", "warm-up"], jobs
    await queue.client.aclose()
    await reader.client.aclose()


async def _busy(probe: aioredis.Redis) -> bool:
    """A PING gets no answer for a while: the node is busy."""
    try:
        async with asyncio.timeout(0.2):
            await probe.ping()
    except TimeoutError:
        await probe.aclose()
        return True
    return False


async def _quiet(queue: Queue) -> bool:
    """The node answers a new connection: it has read what was queued in the older ones first."""
    try:
        await queue.counts()
    except ConnectionFailedError:
        return False
    return True


def _cluster_failed(port: int) -> bool:
    with syncredis.Redis(port=port, decode_responses=True) as client:
        return "cluster_state:fail" in client.execute_command("CLUSTER", "INFO")
