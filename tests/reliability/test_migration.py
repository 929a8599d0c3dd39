"""A live migration of the queue's Cluster slot (CLUSTER SETSLOT MIGRATING/IMPORTING, MIGRATE key by
key) while jobs run. A script that touches a key already moved gets "non local key" from the node,
TRYAGAIN or ASK: each is a fault (the loop backs off and resumes), every script reads its keys before
its first write (so a fault leaves nothing half-written), and the trips sent again after the fault
record each outcome once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import pytest
import redis as syncredis
from redis.crc import key_slot

from conveyor import ConnectionFailedError, JobState, Queue, Worker
from conveyor.testing import RedisClusterServers, RedisServer
from tests.conftest import running, wait_for
from tests.reliability.helpers import FAST, Gate, all_completed, loops_alive, queues


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as c:
        yield c


class Migration:
    """Moves one slot from its owner to another node, a key at a time, under the test's control."""

    def __init__(self, cluster: RedisClusterServers, queue: Queue) -> None:
        self.slot = int(key_slot(queue.keys.meta.encode()))
        self.src = cluster.owner(queue.keys.meta)
        self.dst = next(s for s in cluster.servers if s is not self.src)
        self.others = [s for s in cluster.servers if s is not self.src and s is not self.dst]
        self.moved = 0

    @staticmethod
    def _node(server: RedisServer) -> syncredis.Redis:
        return syncredis.Redis(port=server.port, decode_responses=True, socket_timeout=10)

    def begin(self) -> None:
        with self._node(self.src) as s, self._node(self.dst) as d:
            self.src_id, self.dst_id = s.execute_command("CLUSTER", "MYID"), d.execute_command("CLUSTER", "MYID")
            d.execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.src_id)
            s.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.dst_id)

    def keys_left(self) -> list[str]:
        with self._node(self.src) as s:
            return list(s.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, 100_000))

    def move(self, key: str) -> None:
        with self._node(self.src) as s:
            s.execute_command("MIGRATE", "127.0.0.1", self.dst.port, "", 0, 10_000, "KEYS", key)
        self.moved += 1

    def end(self) -> None:
        """Move whatever is left, then give the slot to the target (the target first, as redis-cli does)."""
        for key in self.keys_left():
            self.move(key)
        for server in (self.dst, self.src, *self.others):
            with self._node(server) as c:
                c.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.dst_id)


async def test_a_heartbeat_meeting_a_moved_job_key_writes_nothing_and_is_a_fault(
    cluster: RedisClusterServers, qname: str
) -> None:
    """extend-1 runs on the source while `active` is still there; one job record already moved: the
    script fails at its reads, before writing the other job's `run` mark (no half-written heartbeat)."""
    queue = Queue(qname, redis=cluster.url)
    await queue.add_bulk([{"name": "j", "data": i} for i in range(2)])
    claimed = await queue.scripts.claim("w", 60_000, 2)
    leases = [(str(claimed[i]), str(claimed[i + 1])) for i in range(1, len(claimed), 6)]
    assert len(leases) == 2
    migration = Migration(cluster, queue)
    migration.begin()
    migration.move(queue.keys.job(leases[1][0]))
    with pytest.raises(ConnectionFailedError, match="non local key"):
        await queue.scripts.extend(60_000, [(job_id, token, True) for job_id, token in leases])
    migration.end()
    assert await queue.client.hget(queue.keys.job(leases[0][0]), "run") is None, "written before the fault"
    assert await queue.scripts.extend(60_000, [(job_id, token, True) for job_id, token in leases]) == [0, 0]
    assert await queue.client.hget(queue.keys.job(leases[0][0]), "run") == leases[0][1]
    await queue.client.aclose()


async def test_jobs_run_while_the_queue_slot_migrates_key_by_key(cluster: RedisClusterServers, qname: str) -> None:
    """Workers claim and finish while every key of the queue moves to another node one at a time: the
    loops ride through the faults, every job completes exactly once (one `completed` event each)."""
    direct, worker_queue = queues(cluster.url, qname)
    gate = Gate()
    runs: Counter[str] = Counter()

    async def handler(ctx: object, data: int) -> int:
        runs[str(data)] += 1
        if data < 40:
            await gate.event.wait()  # the first jobs are running while the migration starts
        await asyncio.sleep(0.002)
        return data

    worker = Worker(worker_queue, {"j": handler}, concurrency=8, **FAST)  # type: ignore[arg-type]
    jobs = await direct.add_bulk([{"name": "j", "data": i} for i in range(120)])
    ids = [j.id for j in jobs]
    migration = Migration(cluster, direct)
    async with running(worker, grace_s=10):
        await wait_for(lambda: worker.active == 8, what="jobs running")
        await asyncio.to_thread(migration.begin)
        # Job records first: the heartbeat and the sweep still run on the source (their declared keys
        # are there) and meet records that moved away.
        keys = sorted(await asyncio.to_thread(migration.keys_left), key=lambda k: ":job:" not in k)
        for n, key in enumerate(keys):
            await asyncio.to_thread(migration.move, key)
            if n == len(keys) // 3:
                gate.open()  # outcomes and new claims meet a half-moved slot
            await asyncio.sleep(0.005)  # the worker runs between keys: a live migration
        await asyncio.to_thread(migration.end)
        gate.open()
        await wait_for(lambda: all_completed(direct, ids), timeout=90, what="every job completed")
        assert loops_alive(worker), "no loop crashed"
    completions = Counter(
        entry["id"] for entry in await _events(direct) if entry.get("ev") == "completed"
    )
    assert {i: completions[i] for i in ids if completions[i] != 1} == {}, "each job completed once"
    assert [await direct.get_state(i) for i in ids] == [JobState.COMPLETED] * len(ids)
    assert migration.moved >= len(ids), "the job records moved one by one while jobs ran"
    await direct.client.aclose()
    await worker_queue.client.aclose()


async def _events(queue: Queue) -> list[dict[str, str]]:
    entries = await queue.client.xrange(queue.keys.events, "-", "+")
    return [fields for _, fields in entries]
