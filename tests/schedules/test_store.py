"""ScheduleStore against real Redis (standalone and Cluster): definitions, versions, next runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from conveyor import Queue
from conveyor.errors import InvalidScheduleError, ScheduleNotFoundError
from conveyor.redis.connection import RedisClient
from conveyor.schedules import Schedule, ScheduleStore
from conveyor.schedules.keys import ScheduleKeys
from tests.schedules.conftest import T0, FakeClock


async def test_put_get_list_delete(store: ScheduleStore, qname: str) -> None:
    s = Schedule(id="nightly", task="report", queue=qname, data={"kind": "daily"},
                 cron="0 3 * * *", tz="Europe/Madrid", options={"attempts": 3})
    info = await store.put(s)
    assert info.schedule == s
    assert info.version == 1
    assert info.next_run is not None and info.next_run > datetime.now(UTC)
    local = info.next_run.astimezone(ZoneInfo("Europe/Madrid"))
    assert (local.hour, local.minute) == (3, 0)
    assert (await store.get("nightly")).schedule == s
    assert [i.id for i in await store.list()] == ["nightly"]
    await store.delete("nightly")
    assert await store.find("nightly") is None
    assert await store.list() == []
    with pytest.raises(ScheduleNotFoundError):
        await store.get("nightly")
    with pytest.raises(ScheduleNotFoundError):
        await store.delete("nightly")
    with pytest.raises(InvalidScheduleError):
        await store.get("not valid")


async def test_next_run_survives_edits_unless_the_timing_changes(client: RedisClient, prefix: str) -> None:
    clock = FakeClock()
    store = ScheduleStore(client, prefix, clock=clock)
    s = Schedule(id="s", task="t", interval_s=60)
    first = await store.put(s)
    assert first.next_ms == T0 + 60_000 and first.anchor_ms == T0 + 60_000
    clock.advance(30_000)
    edited = await store.put(s.with_changes(data={"x": 1}, options={"timeout": 5}))
    assert edited.next_ms == first.next_ms and edited.anchor_ms == first.anchor_ms
    assert edited.version == 2 and edited.schedule.data == {"x": 1}
    retimed = await store.put(s.with_changes(interval_s=10))
    assert retimed.anchor_ms == T0 + 40_000 and retimed.next_ms == T0 + 40_000


async def test_pause_and_resume_skip_the_paused_ticks(client: RedisClient, prefix: str) -> None:
    clock = FakeClock()
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", interval_s=10))
    paused = await store.pause("s")
    assert paused.schedule.paused and paused.next_run is None
    assert await client.zscore(ScheduleKeys(prefix).next, "s") is None
    clock.advance(95_000)
    resumed = await store.resume("s")
    assert not resumed.schedule.paused
    assert resumed.next_ms == T0 + 100_000  # the grid continues; ticks while paused are gone


async def test_sync_keeps_an_operator_pause(client: RedisClient, prefix: str) -> None:
    store = ScheduleStore(client, prefix)
    s = Schedule(id="s", task="t", interval_s=10, source="code")
    await store.put(s)
    await store.pause("s")
    again = await store.put(s.with_changes(data=[1]), keep_paused=True)
    assert again.schedule.paused and again.next_run is None and again.schedule.data == [1]


async def test_run_now_enqueues_an_extra_job(store: ScheduleStore, client: RedisClient, qname: str) -> None:
    await store.put(
        Schedule(id="s", task="t", queue=qname, interval_s=3600, data={"a": 1}, options={"attempts": 2})
    )
    job_id = await store.run_now("s")
    assert job_id is not None and job_id.startswith("sched:s:run-")
    q = Queue(qname, redis=client, prefix=store.prefix)
    rec = await q.get_job(job_id)
    assert rec is not None and rec.name == "t" and rec.data == {"a": 1} and rec.max_attempts == 2
    await q.obliterate(force=True)


async def test_versions_reject_a_stale_write(client: RedisClient, prefix: str) -> None:
    store = ScheduleStore(client, prefix)
    await store.put(Schedule(id="s", task="t", interval_s=10))
    ok, current = await store.scripts.put("s", 0, "{}", None, False)  # writer that read "absent"
    assert not ok and current == 1
    assert (await store.get("s")).schedule.interval_s == 10


async def test_start_in_the_future_is_the_first_run(client: RedisClient, prefix: str) -> None:
    store = ScheduleStore(client, prefix)
    start = datetime(2040, 1, 1, tzinfo=UTC)
    info = await store.put(Schedule(id="s", task="t", interval_s=3600, start=start))
    assert info.next_run == start
    cron = await store.put(Schedule(id="c", task="t", cron="*/5 * * * *", start=start + timedelta(seconds=1)))
    assert cron.next_run == start + timedelta(minutes=5)


async def test_a_paused_builtins_run_now_outlives_syncs_and_edits_and_runs_at_resume(
    client: RedisClient, prefix: str
) -> None:
    """The pending run-now of a paused built-in is kept by a code sync (keep_paused), by a pause
    again and by an edit of its timing; resuming with it pending makes it due at once."""
    from conveyor.schedules.model import ScheduleKind
    from conveyor.schedules.scheduler import builtin_schedule

    clock = FakeClock()
    store = ScheduleStore(client, prefix, clock=clock)
    builtin = builtin_schedule("conveyor-test", "conveyor.test", 300.0, ScheduleKind.MAINTENANCE)
    await store.put(builtin)
    await store.pause("conveyor-test")
    assert (await store.get("conveyor-test")).next_ms is None
    await store.run_now("conveyor-test")
    assert (await store.get("conveyor-test")).next_ms == T0
    clock.advance(1000)
    await store.put(builtin, keep_paused=True)  # a restarting scheduler's sync
    await store.pause("conveyor-test")
    await store.put(builtin.with_changes(interval_s=600.0), keep_paused=True)  # a new interval in code
    info = await store.get("conveyor-test")
    assert info.schedule.paused and info.next_ms == T0
    await store.run_now("conveyor-test")  # asked twice: still one request, the earlier time
    assert (await store.get("conveyor-test")).next_ms == T0
    clock.advance(1000)
    info = await store.resume("conveyor-test")
    assert not info.schedule.paused and info.next_ms == T0  # due now, then every 600 s
