"""Obliterating a queue that schedules fed leaves none of its keys behind: its schedule tick marks
(sched-ticks) go with the rest, only trip records are left to expire by themselves."""

from __future__ import annotations

from conveyor import Queue
from conveyor.redis.connection import RedisClient
from conveyor.schedules import Schedule
from conveyor.schedules.enqueue import enqueue_ticks


async def test_obliterate_deletes_the_schedule_tick_marks(plain_client: RedisClient, prefix: str, qname: str) -> None:
    plain = plain_client
    q = Queue(qname, redis=plain, prefix=prefix)
    schedule = Schedule(id="s", task="t", queue=qname, interval_s=60)
    assert await enqueue_ticks(q, schedule, [60_000, 120_000]) == 2
    assert await plain.hget(q.keys.schedule_ticks, "s") == "120000"
    await q.obliterate(force=True)
    left = [k async for k in plain.scan_iter(match=q.keys.base + "*", count=1000)]
    assert [k for k in left if not k.startswith(q.keys.base + "trip:")] == []
