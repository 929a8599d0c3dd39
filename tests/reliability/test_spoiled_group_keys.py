"""One tenant's own keys (its ready set `gr:<group>`, its settings and state `gs:<group>`) edited by
hand into another Redis type: the worker's trips replace them (they list no job and hold nothing
readable) instead of failing, so that tenant's jobs and every other tenant's keep running. Before,
the trip that promoted the tenant's delayed job, or recorded the end of its running one, failed
with WRONGTYPE every time it was sent: the pump crashed in a loop and the whole queue stood still."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import RedisClient
from tests.conftest import running
from tests.reliability.helpers import FAST, loops_alive


async def _ok(ctx: JobContext, data: Any) -> Any:
    return data


@pytest.mark.parametrize("spoiled", ["gr", "gs"])
async def test_one_tenants_spoiled_group_key_never_stops_the_queue(
    client: RedisClient, qname: str, spoiled: str
) -> None:
    queue = Queue(qname, redis=client)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> Any:
        started.set()
        await release.wait()
        return data

    held = await queue.add("slow", 0, group="t1")  # its end frees a slot of t1 (gs:t1)
    due = await queue.add("ok", 1, group="t1", delay=0.5)  # its promotion pushes to gr:t1
    worker = Worker(queue, {"slow": slow, "ok": _ok}, **FAST)
    async with running(worker):
        await asyncio.wait_for(started.wait(), 30)
        key = f"{queue.keys.base}{spoiled}:t1"
        await client.delete(key)
        await client.rpush(key, "not", "a", "group", "key")
        release.set()
        others = [await queue.add("ok", 2, group="t2"), await queue.add("ok", 3)]
        for job, expected in zip(others, (2, 3), strict=True):
            assert await job.result(timeout=30) == expected
        assert await held.result(timeout=30) == 0
        assert await due.result(timeout=30) == 1
        assert loops_alive(worker)
    assert worker.loop_restarts == 0
    assert await client.type(f"{queue.keys.base}gr:t1") in ("zset", "none")
