"""Scheduler passes: missed-tick policies across a fleet restart (controllable clock), changes
taking effect in running schedulers, and code declarations synced at start."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from conveyor import Conveyor, Queue, codec
from conveyor.errors import ConfigurationError, ConveyorError
from conveyor.redis.connection import RedisClient
from conveyor.schedules import MissedPolicy, Schedule, Scheduler, ScheduleStore, job_id_tick
from tests.conftest import wait_for
from tests.schedules.conftest import T0, FakeClock


@pytest.fixture
async def target(client: RedisClient, qname: str, prefix: str) -> AsyncIterator[Queue]:
    q = Queue(qname, redis=client, prefix=prefix)
    yield q
    await q.obliterate(force=True)


async def ticks_of(q: Queue) -> list[int]:
    ids = await q.client.zrange(q.keys.ready, 0, -1)
    return sorted(t for t in (job_id_tick(i) for i in ids) if t is not None)


def fleet(client: RedisClient, prefix: str, clock: FakeClock, n: int = 3) -> list[Scheduler]:
    return [Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, maintenance_interval_s=None)
            for _ in range(n)]


async def fleet_pass(schedulers: list[Scheduler]) -> None:
    await asyncio.gather(*(s.run_due() for s in schedulers))


@pytest.mark.parametrize(
    ("missed", "cap", "after_restart"),
    [
        (MissedPolicy.ONCE, 100, [6000]),  # one job for the five missed ticks (the latest)
        (MissedPolicy.ALL, 3, [4000, 5000, 6000]),  # each missed tick, the latest 3 of 5
        (MissedPolicy.ALL, 100, [2000, 3000, 4000, 5000, 6000]),
        (MissedPolicy.SKIP, 100, []),
    ],
)
async def test_missed_ticks_follow_the_policy_after_all_schedulers_were_down(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock,
    missed: MissedPolicy, cap: int, after_restart: list[int],
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=1.0, missed=missed,
                             catch_up_cap=cap))
    first = fleet(client, prefix, clock)
    clock.advance(1000)
    await fleet_pass(first)
    assert await ticks_of(target) == [T0 + 1000]
    # Every scheduler goes away; ticks at +2 s .. +6 s pass with nobody running.
    clock.advance(5700)
    second = fleet(client, prefix, clock)
    await fleet_pass(second)
    assert await ticks_of(target) == [T0 + 1000] + [T0 + t for t in after_restart]
    info = await store.get("s")
    assert info.next_ms == T0 + 7000
    assert info.last_run is not None and info.last_run.skipped == 5 - len(after_restart)
    # Back to normal: the next tick fires once, whatever the fleet size.
    clock.advance(300)
    await fleet_pass(second + fleet(client, prefix, clock))
    ticks = await ticks_of(target)
    assert ticks[-1] == T0 + 7000 and ticks.count(T0 + 7000) == 1
    assert await target.client.zcard(target.keys.ready) == len(after_restart) + 2


async def test_late_ticks_within_grace_all_fire(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=0.1, missed=MissedPolicy.SKIP))
    clock.advance(450)  # ticks at +100..+400 are late, but within the 0.5 s grace
    await fleet_pass(fleet(client, prefix, clock))
    assert await ticks_of(target) == [T0 + 100, T0 + 200, T0 + 300, T0 + 400]


async def test_a_claimed_tick_waits_for_its_claim_to_expire_and_a_prompt_takeover_misses_nothing(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=1.0, missed=MissedPolicy.SKIP))
    clock.advance(1000)
    # A scheduler claims the tick and dies before enqueueing.
    _, claimed = await store.scripts.claim(clock.now_ms, "dead", 30_000, 10, 500)
    assert [c.schedule_id for c in claimed] == ["s"]
    other = fleet(client, prefix, clock, 1)[0]
    assert await other.run_due() == T0 + 31_000  # it sleeps until the claim expires
    assert await ticks_of(target) == []
    clock.advance(30_000)
    await other.run_due()
    # A live scheduler held the run all along (it waited for the claim and took over at once): no tick
    # was missed, so even policy skip fires each of them (the grace is only 0.5 s).
    assert await ticks_of(target) == [T0 + t * 1000 for t in range(1, 32)]
    info = await store.get("s")
    assert info.last_run is not None and info.last_run.skipped == 0


async def test_a_claim_taken_over_long_after_it_lapsed_follows_the_missed_policy(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=1.0))
    clock.advance(1000)
    await store.scripts.claim(clock.now_ms, "dead", 30_000, 10, 500)  # claimed, then every scheduler died
    clock.advance(40_000)  # nobody took over for 10 s after the claim lapsed
    await fleet(client, prefix, clock, 1)[0].run_due()
    # 1 s .. 40 s were missed (policy once: the latest of them), 41 s is on time.
    assert await ticks_of(target) == [T0 + 40_000, T0 + 41_000]


async def test_changes_take_effect_in_running_schedulers(
    client: RedisClient, prefix: str, target: Queue
) -> None:
    store = ScheduleStore(client, prefix)
    schedulers = [Scheduler(client, prefix=prefix, maintenance_interval_s=None, max_sleep_s=30)
                  for _ in range(2)]
    for s in schedulers:
        await s.start()
    try:
        await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=3600))
        # An hourly schedule edited to every 0.1 s: running schedulers pick it up at once.
        await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=0.1))
        await wait_for(lambda: _count(target, 5), timeout=10, what="jobs at the new interval")
        ticks = await ticks_of(target)
        assert all(b - a == 100 for a, b in itertools.pairwise(ticks))
        await store.pause("s")
        paused_at = await target.client.zcard(target.keys.ready)
        info = await store.get("s")
        assert info.next_run is None
        # Every scheduler runs a pass of its own after the pause: none may add a job (a background
        # pass that claimed a tick just before the pause may still add that one job).
        await asyncio.gather(*(s.run_due() for s in schedulers))
        assert await target.client.zcard(target.keys.ready) <= paused_at + 1
        await store.resume("s")
        await wait_for(lambda: _count(target, paused_at + 3), timeout=10, what="jobs after resume")
        await store.delete("s")
        deleted_at = await target.client.zcard(target.keys.ready)
        await asyncio.gather(*(s.run_due() for s in schedulers))  # passes after the delete add nothing
        assert await target.client.zcard(target.keys.ready) <= deleted_at + 1  # at most one in flight
    finally:
        for s in schedulers:
            await s.close()


async def _count(q: Queue, n: int) -> bool:
    return int(await q.client.zcard(q.keys.ready)) >= n


async def test_app_declarations_sync_and_fire(redis_url: str, prefix: str, qname: str) -> None:
    app = Conveyor(redis_url, prefix=prefix)

    @app.every(seconds=0.1, queue=qname, data={"n": 1}, attempts=4)
    async def tick(ctx: object, payload: dict[str, int]) -> None:
        return None

    @app.cron("0 3 * * *", tz="Europe/Madrid", queue=qname, id="nightly", missed="skip")
    async def nightly(ctx: object) -> None:
        return None

    assert set(app.schedules) == {"tick", "nightly"}
    assert app.get_task(qname, "tick") is not None
    scheduler = app.scheduler(maintenance_interval_s=None)
    await scheduler.start()
    q = app.queue(qname)
    try:
        await wait_for(lambda: _count(q, 3), timeout=10, what="declared interval jobs")
    finally:
        await scheduler.close()
    ids = await q.client.zrange(q.keys.ready, 0, 0)
    rec = await q.get_job(ids[0])
    assert rec is not None and rec.name == "tick" and rec.data == {"n": 1} and rec.max_attempts == 4
    infos = {i.id: i for i in await ScheduleStore(app.client, prefix).list()}
    nightly_schedule = infos["nightly"].schedule
    assert nightly_schedule.missed is MissedPolicy.SKIP and nightly_schedule.source == "code"
    await q.obliterate(force=True)
    await app.close()


def test_bad_declarations_fail_at_import_time() -> None:
    app = Conveyor("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="invalid cron"):
        app.cron("99 * * * *", name="c")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="payload"):
        app.every(minutes=1, data="not an int", name="typed")(_typed)
    app.every(minutes=1, id="dup", name="one")(lambda ctx: None)
    with pytest.raises(ConfigurationError, match="twice"):
        app.every(minutes=1, id="dup", name="other")(lambda ctx: None)


async def _typed(ctx: object, payload: int) -> None:
    return None


async def test_a_schedule_that_cannot_be_read_does_not_stop_the_others_firing(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    """A stored definition this version cannot use (written by hand or by another version) fails its
    own pass only: the schedules claimed with it in the same batch still fire."""
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="good", task="t", queue=target.name, interval_s=1.0))
    definition = Schedule(id="bad", task="t", queue=target.name, interval_s=1.0).to_json()
    await client.hset(store.keys.defs, "bad", codec.dumps({"schedule": definition}).decode())  # no anchor_ms
    await client.zadd(store.keys.next, {"bad": T0 + 500})  # due first: claimed first in the batch
    scheduler = Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, maintenance_interval_s=None)
    clock.advance(1000)
    await scheduler.run_due()
    assert await ticks_of(target) == [T0 + 1000]
    assert scheduler.stats.errors == 1
    assert (await store.get("good")).next_ms == T0 + 2000


async def test_run_now_of_a_paused_builtin_runs_it_once_and_keeps_the_pause(
    client: RedisClient, prefix: str, clock: FakeClock
) -> None:
    """An operator paused a built-in schedule (maintenance, alerts), then asked for one run now: it
    runs at the next pass, once, and stays paused."""
    from conveyor.schedules.model import ScheduleKind
    from conveyor.schedules.scheduler import Builtin, builtin_schedule

    runs: list[int] = []

    async def run(now_ms: int) -> None:
        runs.append(now_ms)

    builtin = Builtin(builtin_schedule("conveyor-test", "conveyor.test", 1.0, ScheduleKind.ALERTS), run)
    scheduler = Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, maintenance_interval_s=None,
                          builtins=[builtin])
    store = scheduler.store
    await scheduler.sync()
    await store.pause("conveyor-test")
    assert await store.run_now("conveyor-test") is None
    await scheduler.run_due()
    await wait_for(lambda: len(runs) == 1 and not scheduler._background, what="the built-in ran once")
    info = await store.get("conveyor-test")
    assert info.schedule.paused and info.next_ms is None
    for _ in range(3):  # later passes, ticks later: it stays paused
        clock.advance(1000)
        await scheduler.run_due()
    await wait_for(lambda: not scheduler._background, what="no built-in run in flight")
    assert len(runs) == 1
    info = await store.get("conveyor-test")
    assert info.schedule.paused and info.next_ms is None


@pytest.mark.parametrize("lease_s", [0.0005, 0.05, 0.0])
async def test_a_lease_too_short_to_hold_a_claim_is_refused(client: RedisClient, prefix: str, lease_s: float) -> None:
    """0.0005 s was taken as 0 ms: every claim had lapsed when made, so every pass claimed every due
    schedule again, built-ins included, while they ran."""
    with pytest.raises(ConveyorError, match=r"lease_s >= 0\.1"):
        Scheduler(client, prefix=prefix, lease_s=lease_s, maintenance_interval_s=None)


async def test_pause_and_resume_during_a_pass_neither_fires_twice_nor_bursts(
    client: RedisClient, prefix: str, target: Queue, clock: FakeClock
) -> None:
    """A pass has claimed a tick (its job is about to be enqueued) when an operator pauses and, later,
    resumes the schedule: the pass's tick gets its one job, the resume fires from the next tick after
    now (not the ticks that passed while paused), and no tick gets a second job."""
    store = ScheduleStore(client, prefix, clock=clock)
    await store.put(Schedule(id="s", task="t", queue=target.name, interval_s=1.0))
    a, b = fleet(client, prefix, clock, 2)
    clock.advance(1000)
    _, (claimed,) = await store.scripts.claim(clock.now_ms, "a-pass", 30_000, 10, 500)
    await store.pause("s")
    clock.advance(3200)  # ticks at +2 s .. +4 s pass while paused
    resumed = await store.resume("s")
    assert resumed.next_ms == T0 + 5000
    await a._fire(claimed, T0 + 1000)  # the pass goes on: enqueues its tick, then fails to advance
    assert (await store.get("s")).next_ms == T0 + 5000
    await fleet_pass([a, b])
    assert await ticks_of(target) == [T0 + 1000]
    clock.advance(800)
    await fleet_pass([a, b])
    await fleet_pass([a, b])
    assert await ticks_of(target) == [T0 + 1000, T0 + 5000]
    assert (await store.get("s")).next_ms == T0 + 6000
