"""Built-in runs (maintenance, the alerts evaluator) held by their claim for as long as they run:
real scheduler processes with a run that lasts several leases or is frozen (SIGSTOP) past its lease,
a claim taken away mid-run, Redis unreachable mid-run through the fault proxy, a run-now asked while
the scheduler is down, and a fleet mixing schedulers that run a built-in with one that does not."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.redis.connection import RedisClient, connect
from conveyor.schedules import Scheduler, ScheduleStore
from conveyor.schedules.model import ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule
from conveyor.testing import RedisServer
from tests.conftest import wait_for
from tests.proxy import TcpProxy
from tests.schedules.builtin_scheduler import BUILTIN_ID

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("builtin_scheduler.py")


class BuiltinScheduler:
    """tests/schedules/builtin_scheduler.py in a subprocess."""

    def __init__(self, redis_url: str, prefix: str, name: str, *, lease_s: float, hold_ms: int,
                 interval_s: float = 0.1) -> None:
        env = {**os.environ, "REDIS_URL": redis_url, "SCHED_PREFIX": prefix, "SCHED_LEASE_S": str(lease_s),
               "BUILTIN_HOLD_MS": str(hold_ms), "BUILTIN_INTERVAL_S": str(interval_s), "SCHED_NAME": name,
               "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen([sys.executable, str(HELPER)], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def says(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        seen: list[str] = []
        while True:
            line = await asyncio.to_thread(self.proc.stdout.readline)
            if not line:
                raise AssertionError(f"scheduler exited before {prefix!r}: {''.join(seen)}")
            seen.append(line)
            if line.startswith(prefix):
                return line.strip()

    async def terminate(self) -> str:
        """SIGTERM (the scheduler closes), then closes stdin; returns the lost-claims line."""
        self.proc.send_signal(signal.SIGTERM)
        line = await self.says("lost_claims=")
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.to_thread(self.proc.wait, 60)
        return line

    async def stop(self) -> str:
        """Closes stdin (a clean close) and returns its last line (the lost-claims count)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        line = await self.says("lost_claims=")
        await asyncio.to_thread(self.proc.wait, 60)
        return line

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def processes() -> Iterator[list[BuiltinScheduler]]:
    made: list[BuiltinScheduler] = []
    yield made
    for p in made:
        p.close()


async def llen(client: RedisClient, key: str) -> int:
    return int(await client.llen(key))


async def test_a_run_longer_than_its_lease_never_overlaps_itself_across_two_scheduler_processes(
    redis_url: str, plain: RedisClient, prefix: str, processes: list[BuiltinScheduler]
) -> None:
    """Each run lasts three leases; two scheduler processes compete for every tick. The running one
    renews its claim, so the other never starts the same built-in meanwhile: never two at once.
    (A 2 s lease: a process stalled by a loaded machine for a whole lease may lose its claim, which
    is the fencing case, not this one.)"""
    key = f"{prefix}:test"
    for name in ("a", "b"):
        processes.append(BuiltinScheduler(redis_url, prefix, name, lease_s=2.0, hold_ms=6000))
    for p in processes:
        await p.says("started")
    await wait_for(lambda: llen(plain, f"{key}:ends"), timeout=60, what="a first run ended")

    async def two_runs() -> bool:
        return await llen(plain, f"{key}:ends") >= 2

    await wait_for(two_runs, timeout=120, what="two runs ended")
    lines = [await p.stop() for p in processes]
    assert await plain.get(f"{key}:peak") == "1", f"a run started while another one ran ({lines})"
    starts, ends = await plain.lrange(f"{key}:starts", 0, -1), await plain.lrange(f"{key}:ends", 0, -1)
    # At most the runs that close() stopped: the first's, then the one the second took over at once.
    assert len(starts) - len(ends) <= 2
    assert lines == ["lost_claims=0", "lost_claims=0"]


async def test_a_frozen_run_taken_over_stops_when_its_process_wakes(
    redis_url: str, plain: RedisClient, prefix: str, processes: list[BuiltinScheduler]
) -> None:
    """A scheduler process frozen (SIGSTOP) mid-run past its lease: another process takes the
    built-in over and runs it; when the frozen one wakes, it finds its lease gone and stops its run
    instead of running on beside the new one."""
    key = f"{prefix}:test"
    first = BuiltinScheduler(redis_url, prefix, "a", lease_s=2.0, hold_ms=600_000, interval_s=3600.0)
    processes.append(first)
    await first.says("started")
    await ScheduleStore(plain, prefix).run_now(BUILTIN_ID)

    async def started(names: list[str]) -> bool:
        return await plain.lrange(f"{key}:starts", 0, -1) == names

    await wait_for(lambda: started(["a"]), timeout=30, what="the first process's run")
    first.proc.send_signal(signal.SIGSTOP)
    second = BuiltinScheduler(redis_url, prefix, "b", lease_s=2.0, hold_ms=600_000, interval_s=3600.0)
    processes.append(second)
    await second.says("started")
    await wait_for(lambda: started(["a", "b"]), timeout=60, what="the takeover's run")
    first.proc.send_signal(signal.SIGCONT)

    async def one_active() -> bool:
        return int(await plain.scard(f"{key}:active")) == 1

    await wait_for(one_active, timeout=30, what="the woken process stopped its run")
    assert await first.stop() == "lost_claims=1"
    assert await second.stop() == "lost_claims=0"
    assert await plain.lrange(f"{key}:ends", 0, -1) == []
    assert await plain.lrange(f"{key}:starts", 0, -1) == ["a", "b"]  # nobody started a third run


async def test_a_scheduler_closed_mid_run_hands_its_claim_over_before_the_lease_ends(
    redis_url: str, plain: RedisClient, prefix: str, processes: list[BuiltinScheduler]
) -> None:
    """SIGTERM to a scheduler process in the middle of a built-in run: it stops the run, then
    releases its claim (fenced by its token), so the other process starts the run before the first's
    lease would have lapsed on the Redis clock, and never beside the stopped run."""
    key = f"{prefix}:test"
    store = ScheduleStore(plain, prefix)
    first = BuiltinScheduler(redis_url, prefix, "a", lease_s=20.0, hold_ms=600_000, interval_s=3600.0)
    processes.append(first)
    await first.says("started")
    await store.run_now(BUILTIN_ID)

    async def started(names: list[str]) -> bool:
        return await plain.lrange(f"{key}:starts", 0, -1) == names

    await wait_for(lambda: started(["a"]), timeout=30, what="the first process's run")
    second = BuiltinScheduler(redis_url, prefix, "b", lease_s=20.0, hold_ms=600_000, interval_s=3600.0)
    processes.append(second)
    await second.says("started")
    assert await started(["a"])  # the first holds its claim: the second waits
    held = await plain.hget(store.keys.claims, BUILTIN_ID)
    assert held is not None
    token, since, expiry = held.split("|")  # renewals only move this expiry later
    assert await first.terminate() == "lost_claims=0"
    await wait_for(lambda: started(["a", "b"]), timeout=120, what="the second process's run")
    second_start = int((await plain.lrange(f"{key}:started_at", 0, -1))[1])
    assert second_start < int(expiry), "the second waited for the first's lease to lapse"
    taken = await plain.hget(store.keys.claims, BUILTIN_ID)
    assert taken is not None and not taken.startswith(token + "|")
    assert taken.split("|")[1] == since  # a takeover, not a new claim: lateness judged from the first
    assert await plain.get(f"{key}:peak") == "1"
    assert await second.stop() == "lost_claims=0"


def scheduler_with(client: RedisClient, prefix: str, run: Builtin, lease_s: float) -> Scheduler:
    return Scheduler(client, prefix=prefix, lease_s=lease_s, maintenance_interval_s=None, max_sleep_s=0.2,
                     builtins=[run])


def waiting_builtin(started: asyncio.Event, ended: list[str], cancelled: list[str]) -> Builtin:
    async def run(now_ms: int) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("run")
            raise
        ended.append("run")  # pragma: no cover - the run never ends by itself

    return Builtin(builtin_schedule(BUILTIN_ID, "conveyor.slow", 3600.0, ScheduleKind.MAINTENANCE), run)


async def test_a_run_whose_claim_is_taken_over_stops_and_does_not_advance(
    client: RedisClient, prefix: str
) -> None:
    """A claim lost mid-run (another scheduler took it over after this one stalled): the renewal
    finds another token, the run is cancelled and counted, and its advance never happens."""
    started, ended, cancelled = asyncio.Event(), [], []  # type: ignore[var-annotated]
    scheduler = scheduler_with(client, prefix, waiting_builtin(started, ended, cancelled), lease_s=1.0)
    store = scheduler.store
    await scheduler.sync()
    await store.run_now(BUILTIN_ID)
    due = (await store.get(BUILTIN_ID)).next_ms
    await scheduler.start()
    try:
        await asyncio.wait_for(started.wait(), 30)
        raw = await client.hget(store.keys.claims, BUILTIN_ID)
        assert raw is not None
        await client.hset(store.keys.claims, BUILTIN_ID, "another|" + raw.split("|", 1)[1])
        await wait_for(lambda: scheduler.stats.lost_claims == 1 and cancelled == ["run"], timeout=30,
                       what="the run stopped once its claim was lost")
        info = await store.get(BUILTIN_ID)
        assert info.next_ms == due and info.last_run is None  # not advanced by the run that lost its claim
        assert (await client.hget(store.keys.claims, BUILTIN_ID) or "").startswith("another|")
    finally:
        await scheduler.close()
    assert ended == []


async def test_a_run_that_cannot_renew_its_claim_stops_before_another_scheduler_takes_over(
    redis_server: RedisServer, plain: RedisClient, prefix: str
) -> None:
    """Redis unreachable from the running scheduler (the fault proxy refuses and resets): it cannot
    renew, so it stops its run when the lease it last renewed ends; another scheduler then runs it."""
    started, ended, cancelled = asyncio.Event(), [], []  # type: ignore[var-annotated]
    other_started, other_ended, other_cancelled = asyncio.Event(), [], []  # type: ignore[var-annotated]
    with TcpProxy(redis_server.port) as proxy:
        cut = connect(proxy.url)
        first = scheduler_with(cut, prefix, waiting_builtin(started, ended, cancelled), lease_s=1.0)
        second = scheduler_with(plain, prefix, waiting_builtin(other_started, other_ended, other_cancelled),
                                lease_s=1.0)
        await first.sync()
        await first.store.run_now(BUILTIN_ID)
        await first.start()
        try:
            await asyncio.wait_for(started.wait(), 30)
            proxy.refuse()
            proxy.reset_all()
            await wait_for(lambda: cancelled == ["run"], timeout=30, what="the cut-off run stopped")
            assert first.stats.lost_claims == 1
            await second.start()
            await asyncio.wait_for(other_started.wait(), 30)  # the lapsed claim, taken over
        finally:
            await second.close()
            await first.close()
            await cut.aclose()


async def test_a_run_now_of_a_paused_builtin_survives_a_scheduler_restart(
    redis_url: str, plain: RedisClient, prefix: str, processes: list[BuiltinScheduler]
) -> None:
    """Paused built-in, scheduler down, run-now asked: the restarted scheduler's sync keeps the
    request, runs it once and the built-in stays paused."""
    key = f"{prefix}:test"
    store = ScheduleStore(plain, prefix)
    first = BuiltinScheduler(redis_url, prefix, "first", lease_s=5.0, hold_ms=0, interval_s=3600.0)
    processes.append(first)
    await first.says("started")
    await store.pause(BUILTIN_ID)
    assert await first.stop() == "lost_claims=0"
    assert await store.run_now(BUILTIN_ID) is None
    second = BuiltinScheduler(redis_url, prefix, "second", lease_s=5.0, hold_ms=0, interval_s=3600.0)
    processes.append(second)
    await second.says("started")  # its sync rewrote the built-in's definition

    async def ran() -> bool:
        return await plain.lrange(f"{key}:ends", 0, -1) == ["second"]

    await wait_for(ran, timeout=30, what="the run-now ran after the restart")

    async def settled() -> bool:
        info = await store.get(BUILTIN_ID)
        return info.schedule.paused and info.next_ms is None

    await wait_for(settled, timeout=30, what="the built-in back to paused, with no run pending")
    await second.stop()
    assert await plain.lrange(f"{key}:starts", 0, -1) == ["second"]


async def test_a_scheduler_without_a_builtin_leaves_its_run_to_one_that_runs_it(
    client: RedisClient, prefix: str
) -> None:
    """A fleet where one scheduler runs a built-in (the app's, with alerts) and another does not (a
    plain Scheduler): the second never claims the built-in's tick, so a run-now (or a tick) is not
    consumed as 'skipped' by the scheduler that cannot run it."""
    runs: list[int] = []

    async def run(now_ms: int) -> None:
        runs.append(now_ms)

    builtin = Builtin(builtin_schedule("conveyor-test", "conveyor.test", 3600.0, ScheduleKind.ALERTS), run)
    runner = scheduler_with(client, prefix, builtin, lease_s=30.0)
    other = Scheduler(client, prefix=prefix, maintenance_interval_s=None)
    await runner.sync()
    await runner.store.run_now("conveyor-test")
    await other.run_due()  # first to the due run: it must leave it
    await wait_for(lambda: not other._background, what="no run in flight in the other scheduler")
    info = await runner.store.get("conveyor-test")
    assert info.next_ms is not None and await client.hget(runner.store.keys.claims, "conveyor-test") is None
    await runner.run_due()
    await wait_for(lambda: len(runs) == 1 and not runner._background, what="the run by the scheduler that runs it")
    assert (await runner.store.get("conveyor-test")).next_ms != info.next_ms  # advanced to its next tick


async def test_close_releases_the_claim_only_after_a_slow_to_stop_run_has_ended(
    client: RedisClient, prefix: str
) -> None:
    """A run that takes a while to stop once cancelled (a cleanup it finishes, a cancellation lost in
    a Redis call): close() cancels it again and again; the claim stays held by this scheduler until
    the run has really ended, and only then is it released (marked lapsed, with its token)."""
    started, may_end = asyncio.Event(), asyncio.Event()
    cancels: list[int] = []

    async def run(now_ms: int) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            while not may_end.is_set():  # the cleanup goes on whatever cancellations arrive
                try:
                    await may_end.wait()
                except asyncio.CancelledError:
                    cancels.append(1)

    builtin = Builtin(builtin_schedule(BUILTIN_ID, "conveyor.slow", 3600.0, ScheduleKind.MAINTENANCE), run)
    scheduler = scheduler_with(client, prefix, builtin, lease_s=30.0)
    store = scheduler.store
    await scheduler.sync()
    await store.run_now(BUILTIN_ID)
    await scheduler.start()
    await asyncio.wait_for(started.wait(), 30)
    held = await client.hget(store.keys.claims, BUILTIN_ID)
    assert held is not None
    closing = asyncio.create_task(scheduler.close())
    try:
        # The run got the first cancellation and then at least two more: close() has cancelled the
        # built-in's task again by then (each round is a second, and its first round began earlier).
        await wait_for(lambda: len(cancels) >= 2, timeout=60, what="the run cancelled over and over")
        assert not closing.done(), "close() returned while the run was still stopping"
        assert await client.hget(store.keys.claims, BUILTIN_ID) == held  # not released meanwhile
    finally:
        may_end.set()  # the run ends, so close() does, whatever was asserted
    await asyncio.wait_for(closing, 60)
    token, since, expiry = held.split("|")
    released = await client.hget(store.keys.claims, BUILTIN_ID)
    assert released is not None
    r_token, r_since, r_expiry = released.split("|")
    assert (r_token, r_since) == (token, since) and int(r_expiry) < int(expiry)
    assert int(r_expiry) <= await store.now_ms()  # lapsed: any scheduler takes it over now
    assert scheduler.stats.lost_claims == 0

async def test_a_claim_released_on_close_is_left_alone_once_another_scheduler_holds_it(
    client: RedisClient, prefix: str
) -> None:
    """The release is fenced by the claim's token: a claim taken over meanwhile (this scheduler
    stalled past its lease) stays the other scheduler's."""
    started, ended, cancelled = asyncio.Event(), [], []  # type: ignore[var-annotated]
    scheduler = scheduler_with(client, prefix, waiting_builtin(started, ended, cancelled), lease_s=30.0)
    store = scheduler.store
    await scheduler.sync()
    await store.run_now(BUILTIN_ID)
    await scheduler.start()
    await asyncio.wait_for(started.wait(), 30)
    raw = await client.hget(store.keys.claims, BUILTIN_ID)
    assert raw is not None
    other = "other.1|" + raw.split("|", 1)[1]
    await client.hset(store.keys.claims, BUILTIN_ID, other)
    await scheduler.close()  # before its next renewal (a third of 30 s) finds the claim gone
    assert cancelled == ["run"]
    assert await client.hget(store.keys.claims, BUILTIN_ID) == other


@pytest.mark.parametrize("change", ["pause-resume", "retime"])
async def test_a_builtin_paused_and_resumed_or_retimed_mid_run_never_runs_twice_at_once(
    client: RedisClient, prefix: str, change: str
) -> None:
    """An operator pauses and resumes (or retimes) a built-in while one of its runs is in progress. The
    change used to delete the running claim, so another scheduler started the built-in beside the
    running one as soon as its next tick came due. The run keeps its claim until it ends; the
    resumed schedule fires from its next tick after the change, once, after the run has ended."""
    from tests.schedules.conftest import T0, FakeClock

    clock = FakeClock()
    running, peak, runs = [0], [0], []  # type: ignore[var-annotated]
    release = asyncio.Event()

    async def run(now_ms: int) -> None:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        runs.append(now_ms)
        try:
            await release.wait()
        finally:
            running[0] -= 1

    def one() -> Scheduler:
        builtin = Builtin(builtin_schedule("conveyor-test", "conveyor.test", 1.0, ScheduleKind.ALERTS), run)
        return Scheduler(client, prefix=prefix, clock=clock, grace_s=0.5, lease_s=30.0,
                         maintenance_interval_s=None, builtins=[builtin])

    a, b = one(), one()
    store = a.store
    await a.sync()
    try:
        clock.advance(1000)
        await a.run_due()
        await wait_for(lambda: running[0] == 1, what="a's run started")
        if change == "pause-resume":
            await store.pause("conveyor-test")
            resumed = await store.resume("conveyor-test")
        else:
            old = (await store.get("conveyor-test")).schedule
            resumed = await store.put(old.with_changes(interval_s=2.0))
        assert resumed.next_ms is not None and resumed.next_ms > clock.now_ms  # from now: no burst
        clock.advance(resumed.next_ms - clock.now_ms)  # its next tick is due while a's run goes on
        await b.run_due()
        await a.run_due()
        assert peak[0] == 1 and len(runs) == 1, "the built-in was started beside its running run"
        release.set()
        await wait_for(lambda: not a._background, what="a's run ended")
        release.clear()
        await b.run_due()
        await wait_for(lambda: len(runs) == 2, what="the next tick ran once the first run ended")
        assert runs[1] == resumed.next_ms and peak[0] == 1
        assert T0 < runs[0] < runs[1]
    finally:
        release.set()
        await a.close()
        await b.close()
