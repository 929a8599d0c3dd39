"""One table of Redis faults: every "not usable now" error is a ConnectionFailedError, and the
worker's loops back off and resume by themselves — never crash — through real faults: connections
reset (under uvloop too), a server restarted, a script keeping the server BUSY, a replica refusing
writes (READONLY), a connection closed under a send. LOADING while a large AOF replays:
tests/service/test_process.py (the worker service and its /health)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
import redis as syncredis
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError

from conveyor import ConnectionFailedError, JobContext, Queue, Worker
from conveyor.redis.connection import connect
from conveyor.redis.faults import guarded, is_fault
from conveyor.testing import RedisServer
from tests.conftest import running, wait_for
from tests.proxy import TcpProxy
from tests.reliability.helpers import FAST, Gate, all_completed, loops_alive, queues


def test_the_fault_table() -> None:
    faults = [
        RedisConnectionError("reset"), OSError(104, "reset"), TimeoutError(),
        RuntimeError("unable to perform operation on <TCPTransport closed=True reading=False 0x1>; "
                     "the handler is closed"),
        ClusterDownError("The cluster is down"), TryAgainError("Multiple keys request during rehashing"),
        MovedError("3999 127.0.0.1:6381"), AskError("3999 127.0.0.1:6381"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError("UNBLOCKED force unblock from blocking operation, instance state changed"),
        RedisClusterException("All slots are not covered after query all startup_nodes. 5461 of 16384 covered"),
        RedisClusterException("Redis Cluster cannot be connected. Please provide at least one reachable node"),
        ResponseError("Script attempted to access a non local key in a cluster node script: 7239"),
        ResponseError("Script attempted to execute a command while the cluster is down script: 7239"),
    ]
    not_faults = [
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("ERR Error running script (call to f_1): @user_script:3: bad argument"),
        RuntimeError("something else"), ValueError("BUSY"),
        RedisClusterException("EVALSHA - all keys must map to the same key slot"),
        ResponseError("Script attempted to access keys that do not hash to the same slot script: 1"),
        AttributeError("'NoneType' object has no attribute 'writelines'"),  # not raised inside redis-py
    ]
    assert [is_fault(e) for e in faults] == [True] * len(faults)
    assert [is_fault(e) for e in not_faults] == [False] * len(not_faults)


def test_connection_resets_under_uvloop_never_crash_a_loop(redis_server: RedisServer, qname: str) -> None:
    """uvloop reports a reused connection the peer closed as RuntimeError (closed transport)."""

    async def scenario() -> None:
        with TcpProxy(redis_server.port) as proxy:
            direct = Queue(qname, redis=redis_server.url)
            queue = Queue(qname, redis=connect(proxy.url))
            runs: list[int] = []

            async def handler(ctx: JobContext, data: Any) -> None:
                runs.append(data)
                await asyncio.sleep(0.005)

            worker = Worker(queue, {"j": handler}, concurrency=4, **FAST)  # type: ignore[arg-type]
            jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(40)])
            async with running(worker):
                for _ in range(6):  # reset every connection while jobs run, six times
                    done = len(runs)
                    await wait_for(lambda d=done: len(runs) > d, timeout=20, what="progress between resets")
                    proxy.reset_all()
                await wait_for(lambda: all_completed(direct, [j.id for j in jobs]), timeout=30, what="all done")
                assert loops_alive(worker), {n: t for n, t in worker.loop_tasks.items() if t.done()}
                assert worker.pump_failures > 0, "the resets must have hit trips"
            await direct.obliterate(force=True)
            await direct.close()
            await queue.client.aclose()

    uvloop.run(scenario())


async def test_a_server_restart_is_ridden_through(qname: str) -> None:
    with RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        direct, worker_queue = queues(server.url, qname)
        gate = Gate()
        worker = Worker(worker_queue, {"j": gate.handler}, concurrency=2, **FAST)  # type: ignore[arg-type]
        jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(4)])
        async with running(worker, grace_s=10):
            await wait_for(lambda: worker.active == 2, what="two jobs running")
            await asyncio.to_thread(server.restart)  # killed (SIGKILL) and started again from its AOF
            gate.open()  # the outcomes meet a dead, then a fresh, server
            await wait_for(lambda: all_completed(direct, [j.id for j in jobs]), timeout=30, what="all done")
            assert loops_alive(worker)
        for job in jobs:
            assert (await job.record()).attempts_made == 1
        await direct.client.aclose()
        await worker_queue.client.aclose()


async def test_busy_script_on_the_server_is_ridden_through(qname: str) -> None:
    with RedisServer() as server, syncredis.Redis(port=server.port) as admin:
        admin.config_set("busy-reply-threshold", 50)  # ms a script runs before others get BUSY
        direct, worker_queue = queues(server.url, qname)
        gate = Gate()
        worker = Worker(worker_queue, {"j": gate.handler}, **FAST)  # type: ignore[arg-type]
        job = await direct.add("j", 1)
        async with running(worker, grace_s=10):
            await wait_for(lambda: worker.active == 1, what="job running")
            busy = threading.Thread(target=_run_busy_script, args=(server.port,), daemon=True)
            busy.start()
            with pytest.raises(ConnectionFailedError, match="BUSY"):
                await _until_busy(direct)
            gate.open()  # the outcome meets BUSY
            await wait_for(lambda: worker.pump_failures > 0, what="a trip met BUSY")
            admin.script_kill()
            busy.join(10)
            assert await job.result(timeout=30) == 1
            assert loops_alive(worker)
        await direct.client.aclose()
        await worker_queue.client.aclose()


def _run_busy_script(port: int) -> None:
    with syncredis.Redis(port=port, socket_timeout=30) as client, contextlib.suppress(syncredis.ResponseError):
        client.eval("local i = 0 while true do i = i + 1 end", 0)


async def _until_busy(queue: Queue) -> None:
    async def busy() -> bool:
        await guarded(queue.client.ping())
        return False

    await wait_for(busy, timeout=10, what="the server answers BUSY")


async def test_a_replica_refusing_writes_is_ridden_through_until_promoted(qname: str) -> None:
    with RedisServer() as primary, RedisServer() as replica, syncredis.Redis(port=replica.port) as admin:
        admin.replicaof("127.0.0.1", primary.port)
        direct = Queue(qname, redis=connect(primary.url))
        job = await direct.add("j", 7)
        await wait_for(lambda: admin.exists(direct.keys.job(job.id)) == 1, what="replicated")

        async def handler(ctx: JobContext, data: Any) -> int:
            return data

        # The worker was pointed at what is now a replica: every write is refused with READONLY.
        on_replica = Queue(qname, redis=connect(replica.url))
        worker = Worker(on_replica, {"j": handler}, **FAST)  # type: ignore[arg-type]
        async with running(worker):
            await wait_for(lambda: worker.pump_failures >= 2, what="trips refused by the replica")
            assert loops_alive(worker)
            admin.replicaof("NO", "ONE")  # the failover: the replica is promoted
            assert await on_replica.job(job.id).result(timeout=30) == 7
            assert loops_alive(worker)
        await direct.client.aclose()
        await on_replica.client.aclose()


class ClosedUnderSend(aioredis.Connection):
    """A real connection that, every `every`-th command, is closed the way redis-py closes a node's
    connections while its Cluster client rebuilds the slot map, just before the send: redis-py then
    raises AttributeError ("'NoneType' object has no attribute 'writelines'") from its own code."""

    every = 7
    closed = 0
    _sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        ClosedUnderSend._sent += 1
        if ClosedUnderSend._sent % self.every == 0 and self.is_connected:
            self._close()  # another task's disconnect, landing after the connected check
            ClosedUnderSend.closed += 1
            await self._send_packed_command([command] if isinstance(command, bytes) else command)
        await super().send_packed_command(command, check_health)


async def test_a_connection_closed_under_a_send_is_a_fault(redis_server: RedisServer) -> None:
    conn = aioredis.Connection(port=redis_server.port, socket_timeout=5)
    await conn.connect()
    conn._close()
    with pytest.raises(ConnectionFailedError, match="writelines") as raised:
        await guarded(conn._send_packed_command([b"*1\r\n$4\r\nPING\r\n"]), "sending")
    assert isinstance(raised.value.__cause__, AttributeError)
    with pytest.raises(AttributeError):  # the same error raised by our own code is a bug, not a fault
        await guarded(_ours(None), "sending")


async def _ours(writer: Any) -> None:
    writer.writelines([b""])


async def test_loops_survive_connections_closed_under_their_sends(redis_server: RedisServer, qname: str) -> None:
    direct = Queue(qname, redis=redis_server.url)
    queue = Queue(qname, redis=connect(redis_server.url, connection_class=ClosedUnderSend))

    async def quick(ctx: JobContext, data: int) -> int:
        return data

    worker = Worker(queue, {"j": quick}, concurrency=4, **FAST)  # type: ignore[arg-type]
    jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(60)])
    before = ClosedUnderSend.closed
    async with running(worker):
        await wait_for(lambda: all_completed(direct, [j.id for j in jobs]), timeout=60, what="all done")
        assert ClosedUnderSend.closed - before >= 5, "connections were closed under sends"
        assert loops_alive(worker), "no loop crashed"
    await direct.client.aclose()
    await queue.client.aclose()
