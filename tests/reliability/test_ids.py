"""Tokens and generated ids never repeat — after obliterate deleted the queue's counters, and after a
failover to a replica that had not seen the last numbers; obliterate refuses active jobs atomically."""

from __future__ import annotations

import pytest
import redis as syncredis

from conveyor import Queue, QueueNotEmptyError
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.conftest import wait_for


async def _claim(queue: Queue) -> tuple[int, int]:
    claimed = await queue.scripts.claim("w", 60_000, 1)
    return int(claimed[1]), int(claimed[2])


async def test_obliterate_never_lets_an_id_or_token_come_back(queue: Queue) -> None:
    await queue.add("x")
    old_id, old_token = await _claim(queue)
    await queue.obliterate(force=True)  # deletes meta, where the counters live
    await queue.add("x")
    new_id, new_token = await _claim(queue)
    assert new_id > old_id and new_token > old_token
    assert len(str(new_token)) == 16 and new_token < 2**53  # microseconds of Redis time, exact in JSON


async def test_obliterate_refuses_active_jobs_in_the_same_step_it_deletes(queue: Queue) -> None:
    await queue.add_bulk([{"name": "x", "data": i} for i in range(3)])
    await _claim(queue)
    with pytest.raises(QueueNotEmptyError):
        await queue.obliterate()
    assert (await queue.counts())["waiting"] == 2, "refused before anything was deleted"
    await queue.obliterate(force=True)
    assert sum((await queue.counts()).values()) == 0
    assert [k async for k in queue.client.scan_iter(match=queue.keys.base + "*") if ":trip:" not in k] == []


async def test_a_failover_to_a_lagging_replica_hands_out_no_number_twice(qname: str) -> None:
    with RedisServer() as primary, RedisServer() as replica, syncredis.Redis(port=replica.port) as admin:
        admin.replicaof("127.0.0.1", primary.port)
        old = Queue(qname, redis=connect(primary.url))
        await old.add("x")
        await wait_for(lambda: admin.dbsize() > 0, what="replicated")
        admin.replicaof("NO", "ONE")  # the replica stops following: from here on it lags
        lost = await old.add("x")  # numbers the replica never sees
        lost_token = max([(await _claim(old))[1], (await _claim(old))[1]])
        # The primary dies; the lagging replica is promoted and serves the queue.
        new = Queue(qname, redis=connect(replica.url))
        fresh = await new.add("x")
        assert int(fresh.id) > int(lost.id), "a new job never takes a lost job's id"
        tokens = [(await _claim(new))[1], (await _claim(new))[1]]
        assert min(tokens) > lost_token, "an old lease token never becomes valid again"
        await old.client.aclose()
        await new.client.aclose()
