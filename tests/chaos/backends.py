"""The servers a chaos scenario faults: standalone behind the resetting proxy, a 3-node Cluster, and
a primary + replica under a Sentinel. Every data server runs with its AOF fsynced on every write,
so a SIGKILLed server restarted from its AOF has everything it acknowledged."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import redis as syncredis
from redis.crc import key_slot

from conveyor import Queue
from conveyor.redis.connection import RedisClient, connect
from conveyor.testing import RedisClusterServers, RedisServer, free_port, server_binary
from tests.proxy import TcpProxy

AOF = ["--appendonly", "yes", "--appendfsync", "always"]
REPLICATION = ["--repl-diskless-sync-delay", "0"]  # a replica syncs at once, not after the 5 s default
DOWN_S = 1.0


class Standalone:
    """One server with its AOF, reached by the workers and the producer through the tests' TCP proxy
    (tests/proxy.py), which resets every connection on demand."""

    name = "standalone"

    def __init__(self) -> None:
        self.server = RedisServer(extra_args=AOF)
        self.proxy: TcpProxy | None = None
        self.restarts = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start)
        self.proxy = TcpProxy(self.server.port).start()

    @property
    def worker_url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    def producer_client(self) -> RedisClient:
        return connect(self.worker_url)

    def admin_client(self) -> RedisClient:
        return connect(self.server.url)

    def reset_connections(self) -> int:
        assert self.proxy is not None
        return self.proxy.reset_all()

    async def restart_server(self) -> None:
        """SIGKILL the server, keep it down a moment, start it again from its AOF on the same port."""
        await asyncio.to_thread(self.server.stop)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(self.server.start, self.server.port, 60.0)
        self.restarts += 1

    async def job_keys(self, queue: Queue) -> list[str]:
        return await scan_job_keys(self.admin_client(), queue)

    async def close(self) -> None:
        if self.proxy is not None:
            await asyncio.to_thread(self.proxy.close)
        await asyncio.to_thread(self.server.close)


async def scan_job_keys(client: RedisClient, queue: Queue) -> list[str]:
    """Every job key of the queue (SCAN), so a job in no state set is seen too; closes `client`."""
    try:
        return [k async for k in client.scan_iter(match=queue.keys.job("*"), count=1000)]
    finally:
        await client.aclose()


def _node(server: RedisServer) -> syncredis.Redis:
    return syncredis.Redis(port=server.port, decode_responses=True, socket_timeout=10)


class _Direct:
    """A backend every client reaches directly (no proxy): producer and admin clients use the
    workers' URL, and there is no connection to reset."""

    @property
    def worker_url(self) -> str:
        raise NotImplementedError

    def producer_client(self) -> RedisClient:
        return connect(self.worker_url)

    def admin_client(self) -> RedisClient:
        return connect(self.worker_url)

    def reset_connections(self) -> int:
        return 0


class Cluster(_Direct):
    """Three primaries with AOF. Faults: restart the slot owner; migrate the queue's slot live."""

    name = "cluster"

    def __init__(self) -> None:
        self.cluster = RedisClusterServers()
        for s in self.cluster.servers:
            s.extra_args += AOF
        self.restarts = 0
        self.migrations = 0
        self.migrated_keys = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.cluster.start)

    @property
    def worker_url(self) -> str:
        return self.cluster.url

    @staticmethod
    def _slot(queue: Queue) -> int:
        return int(key_slot(queue.keys.meta.encode()))

    def owner(self, slot: int) -> RedisServer:
        """The node serving `slot`, as any node that answers sees it."""
        for server in self.cluster.servers:
            try:
                with _node(server) as c:
                    for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
                        if lo <= slot <= hi:
                            port = int(primary[1])
                            return next(s for s in self.cluster.servers if s.port == port)
            except syncredis.ConnectionError:
                continue
        raise AssertionError(f"no node answers for slot {slot}")

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if all("cluster_state:ok" in _info(s) for s in self.cluster.servers):
                    return
            except syncredis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("cluster not ok after a restart")
            time.sleep(0.1)

    async def restart_owner(self, queue: Queue) -> None:
        server = self.owner(self._slot(queue))
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(server.start, server.port, 60.0)
        await asyncio.to_thread(self._wait_ok)
        self.restarts += 1

    async def migrate(self, queue: Queue, batch: int = 1, pause_s: float = 0.002) -> None:
        """Move the queue's slot to the next node while jobs run: IMPORTING/MIGRATING, MIGRATE key by
        key (job records first, so the scripts still served by the source meet records that moved),
        then SETSLOT NODE on every node (the target first)."""
        slot = self._slot(queue)
        src = self.owner(slot)
        dst = next(s for s in self.cluster.servers if s is not src)
        await asyncio.to_thread(self._migrate, slot, src, dst, batch, pause_s)
        self.migrations += 1

    def _migrate(self, slot: int, src: RedisServer, dst: RedisServer, batch: int, pause_s: float) -> None:
        with _node(src) as s, _node(dst) as d:
            src_id, dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
            d.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100_000):
                keys.sort(key=lambda key: ":job:" not in key)
                for start in range(0, len(keys), batch):
                    moving = keys[start:start + batch]
                    s.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 10000, "KEYS", *moving)
                    self.migrated_keys += len(moving)
                    time.sleep(pause_s)  # lets the workers run between keys: a live migration
            d.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            s.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            for other in self.cluster.servers:
                if other is not src and other is not dst:
                    with _node(other) as o:
                        o.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)

    async def job_keys(self, queue: Queue) -> list[str]:
        slot = self._slot(queue)
        with _node(self.owner(slot)) as c:
            keys = c.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 10_000_000)
        prefix = queue.keys.job("")
        return [k for k in keys if k.startswith(prefix)]

    async def close(self) -> None:
        await asyncio.to_thread(self.cluster.close)


def _info(server: RedisServer) -> str:
    with _node(server) as c:
        return str(c.execute_command("CLUSTER", "INFO"))


class Sentinel(_Direct):
    """A primary and a replica (both with AOF) under one Sentinel; the fault kills the primary."""

    name = "sentinel"
    service = "chaos"

    def __init__(self, workdir: Path) -> None:
        self.primary = RedisServer(extra_args=AOF + REPLICATION)
        self.replica = RedisServer(extra_args=AOF + REPLICATION)
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.failovers = 0

    async def start(self) -> None:
        await asyncio.to_thread(self.primary.start)
        self.replica.extra_args += ["--replicaof", "127.0.0.1", str(self.primary.port)]
        await asyncio.to_thread(self.replica.start)
        self.port = free_port()
        conf = self.workdir / "sentinel.conf"
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 4000\n"  # a failed attempt is retried after 8 s
        )
        self.proc = subprocess.Popen([server_binary(), str(conf), "--sentinel"],  # noqa: ASYNC220
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.to_thread(self._wait, self._replica_linked, "the replica in sync, as the sentinel sees it")

    def _wait(self, ready: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with syncredis.Redis(port=self.port, socket_timeout=2, decode_responses=True) as c:
                    if ready(c):
                        return
            except syncredis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            time.sleep(0.1)

    @property
    def worker_url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}/0"

    async def failover(self) -> None:
        """SIGKILL the primary under load; the Sentinel promotes the replica. The old primary then
        comes back from its AOF and the Sentinel turns it into a replica of the new one (so writes
        that wait for a replica can be acknowledged again)."""
        await asyncio.to_thread(self.primary.stop)
        port = str(self.replica.port)
        await asyncio.to_thread(
            self._wait, lambda c: c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)[1] == port,
            "the replica promoted", 180.0)
        self.failovers += 1
        await asyncio.to_thread(self.primary.start, self.primary.port, 60.0)
        self.primary, self.replica = self.replica, self.primary
        try:
            await asyncio.to_thread(self._wait, self._replica_linked, "the old primary replicating the new one", 60.0)
        except AssertionError:
            # On a busy machine the Sentinel can be slow to turn the old primary into a replica:
            # do what an operator would (REPLICAOF the new primary), then wait for the link again.
            with syncredis.Redis(port=self.replica.port, socket_timeout=10) as c:
                c.execute_command("REPLICAOF", "127.0.0.1", str(self.primary.port))
            await asyncio.to_thread(self._wait, self._replica_linked, "the old primary replicating the new one", 240.0)

    def _replica_linked(self, c: syncredis.Redis) -> bool:
        replicas = c.execute_command("SENTINEL", "REPLICAS", self.service)
        for info in replicas:  # redis-py parses each replica into a dict
            if str(info.get("port")) == str(self.replica.port) and info.get("master-link-status") == "ok":
                return True
        return False

    async def job_keys(self, queue: Queue) -> list[str]:
        return await scan_job_keys(self.admin_client(), queue)

    async def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
        await asyncio.to_thread(self.primary.close)
        await asyncio.to_thread(self.replica.close)
