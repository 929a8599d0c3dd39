"""Built-in maintenance: retention trimming of 100,000 old records, events and idempotency keys, in
bounded batches: every call is counted and touches at most one batch of records (shown by counting,
never by a clock, so it holds on a busy machine)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from conveyor import Queue, Retention
from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import MAINTENANCE_ID, Maintenance, MaintenanceReport, Scheduler, ScheduleStore
from conveyor.schedules import maintenance as maintenance_module
from conveyor.schedules.scripts import prune_idempotency, trim_finished
from conveyor.testing import RedisServer
from tests.conftest import wait_for

DAY_MS = 86_400_000

# Creates `n` finished job records in one call (the test's fast way to fill a queue).
_FILL = """
local set, base, state, score = KEYS[1], ARGV[1], ARGV[2], ARGV[5]
local first, n = tonumber(ARGV[3]), tonumber(ARGV[4])
local z = {}
for i = first, first + n - 1 do
  redis.call('HSET', base .. 'job:' .. i, 'name', 'old', 'data', '{}', 'state', state, 'finished', score)
  z[#z + 1] = score
  z[#z + 1] = tostring(i)
end
redis.call('ZADD', set, unpack(z))
return n
"""


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
async def own_client(own_server: RedisServer) -> AsyncIterator[RedisClient]:
    c = connect(own_server.url)
    yield c
    await c.aclose()


async def fill(client: RedisClient, q: Queue, state: str, first: int, n: int, score_ms: int) -> None:
    for start in range(first, first + n, 2000):
        count = min(2000, first + n - start)
        await client.eval(_FILL, 1, q.keys.state_set(state), q.keys.base, state, start, count, score_ms)


async def fill_big_queue(client: RedisClient, now: int) -> Queue:
    q = Queue("big", redis=client)
    await q.obliterate(force=True)
    await q._register()
    await q.set_retention(Retention(completed_max_count=100_000, completed_max_age_s=86_400,
                                    failed_max_count=1000, failed_max_age_s=None))
    await fill(client, q, "completed", 1, 60_000, now - 2 * DAY_MS)  # past the 24 h age limit
    await fill(client, q, "failed", 60_001, 40_000, now - 3 * DAY_MS)  # over the 1,000 count limit
    await fill(client, q, "completed", 100_001, 500, now - 1000)  # fresh: kept
    # Events: 3,000 from two days ago, 200 recent; this queue keeps events for one day.
    await client.hset(q.keys.meta, "events_max_age_ms", DAY_MS)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(3000):
            pipe.xadd(q.keys.events, {"ev": "added", "id": str(i)}, id=f"{now - 2 * DAY_MS}-{i + 1}")
        for i in range(200):
            pipe.xadd(q.keys.events, {"ev": "added", "id": f"new{i}"}, id=f"{now - 1000}-{i + 1}")
        # Idempotency keys: 500 pointing at vanished jobs, 10 at live ones.
        for i in range(500):
            pipe.set(q.keys.idempotency(f"gone{i}"), f"missing{i}", px=DAY_MS)
        for i in range(10):
            pipe.set(q.keys.idempotency(f"live{i}"), str(100_001 + i), px=DAY_MS)
        await pipe.execute()
    assert await client.zcard(q.keys.completed) == 60_500
    return q


async def test_trims_100k_old_records_in_bounded_batches(
    own_client: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = own_client
    per_call: list[tuple[str, int]] = []  # (what, records the call touched)

    async def counted_trim(*args: Any) -> tuple[int, bool]:
        deleted, more = await trim_finished(*args)
        per_call.append(("trim", deleted))
        return deleted, more

    async def counted_prune(client: RedisClient, keys: Any, idem_keys: list[str]) -> int:
        per_call.append(("prune", len(idem_keys)))
        return await prune_idempotency(client, keys, idem_keys)

    monkeypatch.setattr(maintenance_module, "trim_finished", counted_trim)
    monkeypatch.setattr(maintenance_module, "prune_idempotency", counted_prune)
    now = int(time.time() * 1000)
    q = await fill_big_queue(client, now)
    report = await Maintenance(client, batch=200).run(now)
    check_trimmed(report, await snapshot(client, q, now))
    assert max(n for _, n in per_call) <= 200  # no call touched more than one batch
    trims = [n for what, n in per_call if what == "trim"]
    assert sum(trims) == 99_000 and len(trims) >= 99_000 // 200
    xtrims = report.calls - len(per_call)  # the rest are XTRIM calls, each with LIMIT 1000
    assert xtrims >= 1 and report.events_trimmed <= 1000 * xtrims


async def snapshot(client: RedisClient, q: Queue, now: int) -> dict[str, object]:
    failed_left = await client.zrange(q.keys.failed, 0, -1)
    entries = await client.xrange(q.keys.events, count=10_000)
    return {
        "completed": await client.zcard(q.keys.completed),
        "failed": len(failed_left),
        "failed_hashes": await client.exists(*[q.keys.job(i) for i in failed_left]),
        "old_hashes": await client.exists(q.keys.job("1"), q.keys.job("59999")),
        "fresh_hashes": await client.exists(q.keys.job("100001"), q.keys.job("100500")),
        "old_events": len([e for e in entries if not e[1]["id"].startswith("new")]),
        "new_events": len(await client.xrange(q.keys.events, min=f"{now - 1000}-0", count=1000)),
        "live_idem": await client.exists(*[q.keys.idempotency(f"live{i}") for i in range(10)]),
    }


def check_trimmed(report: MaintenanceReport, snap: dict[str, object]) -> None:
    assert snap["completed"] == 500
    assert snap["failed"] == 1000 and snap["failed_hashes"] == 1000  # kept records intact
    assert snap["old_hashes"] == 0 and snap["fresh_hashes"] == 2
    assert report.records_deleted == {"big": 60_000 + 39_000}
    assert isinstance(snap["old_events"], int) and snap["old_events"] < 200  # whole nodes go
    assert snap["new_events"] == 200
    assert report.idempotency_keys_deleted == 500 and snap["live_idem"] == 10


async def test_builtin_schedule_runs_maintenance(redis_url: str, prefix: str, qname: str) -> None:
    client = connect(redis_url)
    q = Queue(qname, redis=client, prefix=prefix)
    try:
        await q._register()
        await q.set_retention(Retention(completed_max_count=10, completed_max_age_s=None))
        now = int(time.time() * 1000)
        await fill(client, q, "completed", 1, 50, now - 1000)
        scheduler = Scheduler(client, prefix=prefix, maintenance_interval_s=0.2)
        store = ScheduleStore(client, prefix)

        async def advanced() -> bool:  # the pass that trimmed has recorded its run
            return (await store.get(MAINTENANCE_ID)).last_run is not None

        await scheduler.start()
        try:
            await wait_for(lambda: _zcard_is(client, q.keys.completed, 10), timeout=30, what="trimmed to 10")
            await wait_for(advanced, timeout=30, what="the maintenance run recorded")
        finally:
            await scheduler.close()
        info = await store.get(MAINTENANCE_ID)
        assert info.schedule.kind.value == "maintenance" and info.last_run is not None
        kept = await client.zrange(q.keys.completed, 0, -1)
        assert await client.exists(*[q.keys.job(i) for i in kept]) == 10
    finally:
        await q.obliterate(force=True)
        await client.aclose()


async def _zcard_is(client: RedisClient, key: str, n: int) -> bool:
    return int(await client.zcard(key)) == n


async def test_maintenance_on_cluster(cluster_servers: object, prefix: str, qname: str) -> None:
    client = connect(cluster_servers.url)  # type: ignore[attr-defined]
    q = Queue(qname, redis=client, prefix=prefix)
    try:
        await q._register()
        now = int(time.time() * 1000)
        await fill(client, q, "completed", 1, 300, now - 2 * DAY_MS)
        await client.set(q.keys.idempotency("gone"), "missing", px=DAY_MS)
        report = await Maintenance(client, prefix).run(now)
        assert await client.zcard(q.keys.completed) == 0
        assert report.records_deleted == {qname: 300}
        assert report.idempotency_keys_deleted == 1
    finally:
        await q.obliterate(force=True)
        await client.aclose()


async def test_run_now_makes_the_next_pass_run_maintenance(redis_url: str, prefix: str, qname: str) -> None:
    client = connect(redis_url)
    q = Queue(qname, redis=client, prefix=prefix)
    try:
        await q._register()
        await q.set_retention(Retention(completed_max_count=5, completed_max_age_s=None))
        await fill(client, q, "completed", 1, 20, int(time.time() * 1000))
        scheduler = Scheduler(client, prefix=prefix, maintenance_interval_s=3600)
        await scheduler.start()
        try:
            assert await client.zcard(q.keys.completed) == 20  # the hourly run is not due yet
            assert await ScheduleStore(client, prefix).run_now(MAINTENANCE_ID) is None
            await wait_for(lambda: _zcard_is(client, q.keys.completed, 5), timeout=10, what="trimmed to 5")

            async def back_on_the_hourly_grid() -> bool:  # the pass advances right after trimming
                info = await ScheduleStore(client, prefix).get(MAINTENANCE_ID)
                return info.next_ms is not None and info.next_ms > int(time.time() * 1000) + 3_000_000

            await wait_for(back_on_the_hourly_grid, timeout=10, what="next run advanced by an hour")
        finally:
            await scheduler.close()
        info = await ScheduleStore(client, prefix).get(MAINTENANCE_ID)
        assert info.next_run is not None
    finally:
        await q.obliterate(force=True)
        await client.aclose()


async def test_no_maintenance_removes_the_stored_schedule_and_never_runs_it(
    redis_url: str, prefix: str, qname: str
) -> None:
    client = connect(redis_url)
    q = Queue(qname, redis=client, prefix=prefix)
    store = ScheduleStore(client, prefix)
    try:
        await q._register()
        await q.set_retention(Retention(completed_max_count=5, completed_max_age_s=None))
        await fill(client, q, "completed", 1, 20, int(time.time() * 1000))
        earlier = Scheduler(client, prefix=prefix, maintenance_interval_s=3600)  # an earlier run of the deployment
        await earlier.start()
        await earlier.close()
        assert await store.find(MAINTENANCE_ID) is not None

        off = Scheduler(client, prefix=prefix, maintenance_interval_s=None, max_sleep_s=0.1)  # --no-maintenance
        await off.start()
        try:
            assert await store.find(MAINTENANCE_ID) is None  # the stored built-in is gone: nothing fires it

            # Written again meanwhile (a scheduler of another deployment started with maintenance) and
            # due now: a scheduler without maintenance leaves it to the ones that run it.
            await earlier.sync()
            assert await store.run_now(MAINTENANCE_ID) is None
            passes = off.stats.passes
            await wait_for(lambda: _passes_at_least(off, passes + 5), timeout=30, what="five more passes")
            assert await client.zcard(q.keys.completed) == 20  # not trimmed: maintenance did not run
            assert (await store.get(MAINTENANCE_ID)).last_run is None
        finally:
            await off.close()
    finally:
        await q.obliterate(force=True)
        await client.aclose()


async def _passes_at_least(scheduler: Scheduler, n: int) -> bool:
    return scheduler.stats.passes >= n
