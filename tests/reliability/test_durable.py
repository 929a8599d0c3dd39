"""Durable acknowledgement: enqueues and outcomes wait for replicas (WAIT) and/or the AOF fsync
(WAITAOF) on the connection that wrote them, on a Cluster on the slot's node; when the promise cannot
be kept in time the call fails with DurabilityError (the write stays applied on the primary)."""

from __future__ import annotations

from typing import Any

import pytest
import redis as syncredis

from conveyor import ConfigurationError, Durability, DurabilityError, JobContext, Queue, Worker
from conveyor.embedded.config import server_binary as valkey_binary
from conveyor.redis.connection import connect
from conveyor.testing import RedisClusterServers, RedisServer
from tests.conftest import running, wait_for


async def done(ctx: JobContext, data: Any) -> Any:
    return data


async def test_waiting_for_a_replica(qname: str) -> None:
    with RedisServer() as primary, RedisServer() as replica, syncredis.Redis(port=replica.port) as admin:
        admin.replicaof("127.0.0.1", primary.port)
        await wait_for(lambda: admin.info("replication")["master_link_status"] == "up", what="replica in sync")
        queue = Queue(qname, redis=connect(primary.url), durability=Durability(replicas=1, timeout_ms=500))
        job = await queue.add("j", 1)
        assert admin.exists(queue.keys.job(job.id)) == 1, "acknowledged only once the replica had it"
        async with running(Worker(queue, {"j": done})):
            assert await job.result(timeout=20) == 1
        assert admin.hget(queue.keys.job(job.id), "state") == b"completed", "the outcome was replicated first"
        replica.stop()
        with pytest.raises(DurabilityError, match="0 of 1 replica"):
            await queue.add("j", 2)
        await queue.client.aclose()


async def test_waiting_for_the_aof_fsync(qname: str) -> None:
    with RedisServer(binary=valkey_binary(), extra_args=["--appendonly", "yes"]) as server:
        queue = Queue(qname, redis=connect(server.url), durability=Durability(aof=True))
        job = await queue.add("j", 1)
        async with running(Worker(queue, {"j": done})):
            assert await job.result(timeout=20) == 1
        with syncredis.Redis(port=server.port) as admin:
            assert int(admin.info("commandstats")["cmdstat_waitaof"]["calls"]) >= 2  # the add and the outcome
        await queue.client.aclose()
    with RedisServer(binary=valkey_binary()) as no_aof:
        queue = Queue(qname, redis=connect(no_aof.url), durability=Durability(aof=True))
        with pytest.raises(ConfigurationError, match="appendonly"):
            await queue.add("j", 1)
        await queue.client.aclose()


async def test_on_a_cluster_the_wait_runs_on_the_slot_owner(qname: str) -> None:
    with RedisClusterServers(binary=valkey_binary(), extra_args=["--appendonly", "yes"]) as cluster:
        queue = Queue(qname, redis=connect(cluster.url), durability=Durability(aof=True))
        job = await queue.add("j", 1)
        async with running(Worker(queue, {"j": done})):
            assert await job.result(timeout=20) == 1
        owner = cluster.owner(queue.keys.meta)
        for server in cluster.servers:
            with syncredis.Redis(port=server.port) as admin:
                calls = int(admin.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0))
            assert (calls >= 2) if server is owner else (calls == 0), (server.port, calls)
        await queue.client.aclose()
