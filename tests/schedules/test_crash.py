"""Schedules through a scheduler crash, with real scheduler processes killed (or frozen) at the worst
points of a pass: between enqueueing a tick's job and advancing the schedule, and right after
claiming a tick. A tick yields exactly one job whatever the job's `result_ttl`, and a live scheduler
taking over a lapsed claim never counts the tick as missed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.redis.connection import RedisClient
from conveyor.schedules import MissedPolicy, Schedule, ScheduleStore
from conveyor.schedules.model import from_ms
from tests.conftest import running, wait_for

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("crash_scheduler.py")


class SchedulerProcess:
    """tests/schedules/crash_scheduler.py in a subprocess; `go()` lets it start competing for claims."""

    def __init__(self, redis_url: str, prefix: str, lease_s: float, grace_s: float, crash_at: str = "",
                 how: str = "kill") -> None:
        env = {**os.environ, "REDIS_URL": redis_url, "SCHED_PREFIX": prefix, "SCHED_LEASE_S": str(lease_s),
               "SCHED_GRACE_S": str(grace_s), "SCHED_CRASH_AT": crash_at, "SCHED_CRASH_HOW": how,
               "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, str(HELPER)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    async def says(self, word: str) -> None:
        assert self.proc.stdout is not None
        seen: list[str] = []
        while True:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                raise AssertionError(f"scheduler exited before {word!r}: {''.join(seen)}")
            seen.append(line)
            if line.strip() == word:
                return

    def stopped(self) -> bool:
        """SIGSTOPped (state T in /proc)."""
        stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def schedulers() -> Iterator[list[SchedulerProcess]]:
    made: list[SchedulerProcess] = []
    yield made
    for p in made:
        p.close()


async def one_tick_schedule(store: ScheduleStore, client: RedisClient, queue: str, **fields: Any) -> int:
    """An hourly schedule whose first tick is 1.5 s from now (Redis clock); returns that tick (ms)."""
    sec, usec = await client.time()
    tick = (int(sec) * 1000 + int(usec) // 1000) + 1500
    await store.put(Schedule(id="s", task="t", queue=queue, interval_s=3600, start=from_ms(tick), **fields))
    return tick


async def added_events(q: Queue, job_id: str) -> int:
    return sum(1 for e in await q.read_events("0-0", count=10_000) if e.type == "added" and e.job_id == job_id)


async def test_a_crash_between_enqueue_and_advance_never_makes_a_second_job_even_with_result_ttl_0(
    redis_url: str, plain: RedisClient, prefix: str, qname: str, schedulers: list[SchedulerProcess]
) -> None:
    store = ScheduleStore(plain, prefix)
    q = Queue(qname, redis=plain, prefix=prefix)
    runs_key = f"{prefix}:test:runs"

    async def t(ctx: JobContext, data: Any) -> None:
        await plain.incr(runs_key)

    tick = await one_tick_schedule(store, plain, qname, options={"result_ttl": 0})
    job_id = f"sched:s:{tick}"
    first = SchedulerProcess(redis_url, prefix, lease_s=1.0, grace_s=30.0, crash_at="advance")
    second = SchedulerProcess(redis_url, prefix, lease_s=1.0, grace_s=30.0)
    schedulers += [first, second]
    first.go()
    await first.says("crashing")
    assert await asyncio.to_thread(first.proc.wait, 60) == -9  # killed after enqueueing, before advancing
    assert (await store.get("s")).next_ms == tick  # the schedule was not advanced

    async with running(Worker(q, {"t": t}, concurrency=1, idle_block_s=0.2)):
        async def ran_and_deleted() -> bool:
            return await plain.get(runs_key) == "1" and await q.get_job(job_id) is None

        await wait_for(ran_and_deleted, timeout=30, what="the tick's job ran and its record was deleted")
        second.go()  # takes over the lapsed claim and fires the same tick again

        async def advanced() -> bool:
            return (await store.get("s")).next_ms == tick + 3_600_000

        await wait_for(advanced, timeout=60, interval=0.05, what="the second scheduler advanced the schedule")

        async def idle() -> bool:
            counts = await q.counts()
            return sum(counts.values()) == 0

        await wait_for(idle, timeout=30, what="nothing left to run")
    assert await plain.get(runs_key) == "1"
    assert await added_events(q, job_id) == 1
    await q.obliterate(force=True)


async def test_a_live_scheduler_taking_over_a_frozen_claim_does_not_skip_the_tick(
    redis_url: str, plain: RedisClient, prefix: str, qname: str, schedulers: list[SchedulerProcess]
) -> None:
    """A lease a little longer than the grace (the defaults are equal): the takeover happens a lease
    after the claim, so the tick is more than a grace late. Policy skip must still fire it, since a
    live scheduler was waiting. (20 s of grace: on a busy machine the second scheduler may take
    seconds to notice the lapse, and only a takeover within a grace of it counts as prompt.)"""
    store = ScheduleStore(plain, prefix)
    q = Queue(qname, redis=plain, prefix=prefix)
    tick = await one_tick_schedule(store, plain, qname, missed=MissedPolicy.SKIP)
    first = SchedulerProcess(redis_url, prefix, lease_s=21.0, grace_s=20.0, crash_at="fire", how="stop")
    second = SchedulerProcess(redis_url, prefix, lease_s=21.0, grace_s=20.0)
    schedulers += [first, second]
    first.go()
    await first.says("crashing")
    await wait_for(first.stopped, timeout=30, what="the first scheduler frozen while holding its claim")
    second.go()
    await second.says("started")

    async def advanced() -> bool:
        return (await store.get("s")).next_ms == tick + 3_600_000

    await wait_for(advanced, timeout=60, interval=0.05, what="the second scheduler advanced the schedule")
    info = await store.get("s")
    assert info.last_run is not None and (info.last_run.fired, info.last_run.skipped) == (1, 0)
    assert await q.get_job(f"sched:s:{tick}") is not None
    await q.obliterate(force=True)


async def test_a_takeover_firing_later_ticks_too_never_reenqueues_the_crashed_pass_ticks(
    redis_url: str, plain: RedisClient, prefix: str, qname: str, schedulers: list[SchedulerProcess]
) -> None:
    """The scheduler that takes over after a crash between enqueue and advance fires the crashed
    pass's tick again together with the ticks that came due meanwhile. The already-enqueued tick,
    whose job ran and was deleted (result_ttl=0), must not get a second job."""
    store = ScheduleStore(plain, prefix)
    q = Queue(qname, redis=plain, prefix=prefix)
    runs_key = f"{prefix}:test:runs"

    async def t(ctx: JobContext, data: Any) -> None:
        await plain.hincrby(runs_key, ctx.job_id, 1)

    sec, usec = await plain.time()
    tick = (int(sec) * 1000 + int(usec) // 1000) + 1500
    await store.put(Schedule(id="s", task="t", queue=qname, interval_s=2, start=from_ms(tick),
                             options={"result_ttl": 0}))
    first = SchedulerProcess(redis_url, prefix, lease_s=1.0, grace_s=30.0, crash_at="advance")
    second = SchedulerProcess(redis_url, prefix, lease_s=1.0, grace_s=30.0)
    schedulers += [first, second]
    first.go()
    await first.says("crashing")
    assert await asyncio.to_thread(first.proc.wait, 60) == -9  # killed after enqueueing, before advancing
    info = await store.get("s")
    assert info.next_ms == tick
    enqueued = [f"sched:s:{t_}" for t_ in range(tick, tick + 100_000, 2000) if await q.get_job(f"sched:s:{t_}")]
    assert enqueued  # the crashed pass enqueued its tick(s)

    async with running(Worker(q, {"t": t}, concurrency=1, idle_block_s=0.2)):
        async def ran_and_deleted() -> bool:
            runs = await plain.hgetall(runs_key)
            return all([runs.get(j) == "1" and await q.get_job(j) is None for j in enqueued])

        await wait_for(ran_and_deleted, timeout=30, what="the crashed pass's jobs ran and were deleted")
        latest = int(enqueued[-1].rsplit(":", 1)[1])

        async def later_tick_due() -> bool:
            return await redis_ms(plain) > latest + 2000

        await wait_for(later_tick_due, timeout=30, what="a later tick came due")
        second.go()  # takes over the lapsed claim and fires the crashed pass's ticks and the later ones

        async def advanced() -> bool:
            return ((await store.get("s")).next_ms or 0) > latest + 2000

        await wait_for(advanced, timeout=60, interval=0.05, what="the second scheduler advanced the schedule")
        second.close()

        async def idle() -> bool:
            counts = await q.counts()
            return sum(counts.values()) == 0

        await wait_for(idle, timeout=30, what="nothing left to run")
    runs = await plain.hgetall(runs_key)
    assert len(runs) > len(enqueued)  # the takeover fired later ticks
    assert {j: n for j, n in runs.items() if n != "1"} == {}
    for j in enqueued:
        assert await added_events(q, j) == 1
    await q.obliterate(force=True)


async def redis_ms(client: RedisClient) -> int:
    sec, usec = await client.time()
    return int(sec) * 1000 + int(usec) // 1000
