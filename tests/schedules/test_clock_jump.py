"""The `{schedules}` node's clock stepping back (a failover to a replica whose clock is behind, an NTP
step): the stored state is then ahead of "now", as a jump leaves it. Each tick still yields at most
one job (the tick guard in the queue's slot), and nothing stalls for longer than the jump."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor import Queue
from conveyor.redis.connection import RedisClient
from conveyor.schedules import Schedule, Scheduler, ScheduleStore, job_id_tick
from tests.schedules.conftest import T0, FakeClock


@pytest.fixture
async def target(client: RedisClient, qname: str, prefix: str) -> AsyncIterator[Queue]:
    q = Queue(qname, redis=client, prefix=prefix)
    yield q
    await q.obliterate(force=True)


async def _ticks(q: Queue) -> list[int]:
    ids = await q.client.zrange(q.keys.ready, 0, -1)
    return sorted(t for t in (job_id_tick(i) for i in ids) if t is not None)


async def _added(q: Queue) -> list[str]:
    events = await q.client.xrange(q.keys.events, count=100_000)
    return [f["id"] for _, f in events if f.get("ev") == "added"]


@pytest.mark.parametrize("timing", [{"interval_s": 1.0}, {"cron": "* * * * * *"}], ids=["interval", "cron"])
async def test_a_clock_stepping_back_neither_fires_a_tick_twice_nor_stalls_past_the_jump(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock, timing: dict[str, object]
) -> None:
    clock.now_ms = T0  # T0 is on a whole second: cron seconds and the interval grid agree
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, **timing))  # type: ignore[arg-type]
    scheduler = Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, maintenance_interval_s=None)
    for _ in range(5):
        clock.advance(1000)
        await scheduler.run_due()
    assert await _ticks(target) == [T0 + t * 1000 for t in range(1, 6)]
    assert (await store.get("s")).next_ms == T0 + 6000
    clock.now_ms = T0 + 2500  # the clock steps back 2.5 s: the stored next run is ahead of now
    wake = await scheduler.run_due()
    assert wake == T0 + 6000  # it waits for the clock to reach the next tick: the jump, no longer
    assert await _ticks(target) == [T0 + t * 1000 for t in range(1, 6)]
    # An operator retimes it meanwhile, so its next run is computed from the stepped-back clock
    # (ticks at +3 s .. +5 s again): each of those already has its job and none is made again.
    await store.pause("s")
    await store.resume("s")
    for _ in range(4):
        clock.advance(1000)  # +3.5 s .. +6.5 s
        await scheduler.run_due()
    assert await _ticks(target) == [T0 + t * 1000 for t in range(1, 7)]
    assert sorted(await _added(target)) == sorted(await target.client.zrange(target.keys.ready, 0, -1))
    assert (await store.get("s")).next_ms == T0 + 7000
