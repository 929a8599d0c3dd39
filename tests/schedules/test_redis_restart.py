"""A running scheduler through a Redis restart that lost every key (no persistence): it writes its
declared schedules again and reruns the built-ins' setup, so the schedules fire again without the
scheduler being restarted."""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from conveyor import Queue
from conveyor.redis.connection import connect
from conveyor.schedules import Schedule, Scheduler, job_id_tick
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule
from conveyor.testing import RedisServer, free_port
from tests.conftest import wait_for


async def test_declared_schedules_come_back_after_redis_restarts_without_its_data(prefix: str, qname: str) -> None:
    port = free_port()
    server = RedisServer().start(port=port)
    client = connect(server.url)
    setups: list[int] = []

    async def setup() -> None:
        setups.append(1)

    async def run(now_ms: int) -> None:
        return None

    builtin = Builtin(builtin_schedule("conveyor-test", "conveyor.test", 3600.0, ScheduleKind.ALERTS), run, setup)
    scheduler = Scheduler(client, prefix=prefix, maintenance_interval_s=None, max_sleep_s=0.2, builtins=[builtin],
                          schedules=[Schedule(id="often", task="t", queue=qname, interval_s=0.1)])
    q = Queue(qname, redis=client, prefix=prefix)

    async def ticks() -> int:
        ids = await client.zrange(q.keys.ready, 0, -1)
        return sum(1 for i in ids if job_id_tick(i) is not None)

    try:
        await scheduler.start()
        await wait_for(lambda: ticks_at_least(ticks, 2), timeout=30, what="ticks before the restart")
        errors = scheduler.stats.errors
        await asyncio.to_thread(server.stop)
        await wait_for(lambda: scheduler.stats.errors > errors, timeout=30, what="a pass failed while Redis was down")
        await asyncio.to_thread(server.start, port, 60.0)
        await wait_for(lambda: ticks_at_least(ticks, 2), timeout=60, what="ticks after the restart")
        assert setups == [1, 1]  # at start, and again once the rules were found gone
        assert (await scheduler.store.get("conveyor-test")).schedule.kind is ScheduleKind.ALERTS
    finally:
        await scheduler.close()
        await client.aclose()
        await asyncio.to_thread(server.stop)


async def ticks_at_least(ticks: object, n: int) -> bool:
    try:
        return await ticks() >= n  # type: ignore[operator,no-any-return]
    except (RedisError, OSError):  # the test's own connection, closed by the restart
        return False
