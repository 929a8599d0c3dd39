"""Scheduler: fires due schedules, from any number of processes, one job per tick.

A pass claims due schedules in one script (so normally one process does the work), enqueues each
tick's job with an id derived from the schedule and tick time, then advances the stored next run.
Enqueue comes first: a crash in between only makes the next pass enqueue the same ticks again, which
the tick guard in the queue's slot refuses (whether or not the first job's record still exists). A
scheduler that takes over a claim promptly after it lapsed judges lateness from when the claim was
first made, so a takeover by a live scheduler never counts a tick as missed. Between passes the
scheduler blocks on the changes stream until the earliest next run (or a change: a new schedule, an
edit, another scheduler's advance), so it never polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from redis.exceptions import RedisError

from conveyor import codec
from conveyor.cancelling import cancel_and_wait
from conveyor.errors import (
    BrokenScheduleError,
    ConfigurationError,
    ConveyorError,
    InvalidScheduleError,
    ScheduleNotFoundError,
)
from conveyor.redis.connection import RedisClient
from conveyor.schedules.enqueue import enqueue_ticks
from conveyor.schedules.maintenance import Maintenance
from conveyor.schedules.model import MAINTENANCE_ID, Schedule, ScheduleKind
from conveyor.schedules.scripts import Claimed
from conveyor.schedules.store import Clock, ScheduleStore, decode_envelope
from conveyor.schedules.timetable import Plan, plan, timetable

logger = logging.getLogger(__name__)

DEFAULT_GRACE_S = 30.0
DEFAULT_LEASE_S = 30.0
MIN_LEASE_S = 0.1  # a claim must outlast the round trips between claiming and renewing it
DEFAULT_MAX_SLEEP_S = 5.0
DEFAULT_MAINTENANCE_INTERVAL_S = 300.0
_CLAIM_BATCH = 50
_MAX_BLOCK_MS = 5000


def builtin_schedule(schedule_id: str, task: str, interval_s: float, kind: ScheduleKind) -> Schedule:
    return Schedule(id=schedule_id, task=task, queue="conveyor", interval_s=interval_s, kind=kind, source="builtin")


def maintenance_schedule(interval_s: float) -> Schedule:
    return builtin_schedule(MAINTENANCE_ID, "conveyor.maintenance", interval_s, ScheduleKind.MAINTENANCE)


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in schedule run in-process instead of enqueueing a job: `run(now_ms)` at each tick,
    claimed by one scheduler of the fleet like any tick; `setup()` once when a scheduler starts."""

    schedule: Schedule
    run: Callable[[int], Awaitable[object]]
    setup: Callable[[], Awaitable[object]] | None = None


@dataclass(slots=True)
class SchedulerStats:
    passes: int = 0
    ticks_fired: int = 0
    jobs_created: int = 0
    lost_claims: int = 0
    errors: int = 0


class Scheduler:
    """Run with `await start()` / `await close()` (or `await run()`), next to workers or alone.

    `schedules` are declared in code and synced into Redis at start (definitions updated, the next
    run kept unless the timing changed, an operator's pause kept). `grace_s`: ticks later than this
    count as missed and follow the schedule's missed policy. `clock` replaces the Redis clock (tests).
    `maintenance_interval_s=None` (`--no-maintenance`): this deployment does not want maintenance, so
    the scheduler never runs it and deletes the stored `conveyor-maintenance` an earlier run wrote.
    """

    def __init__(
        self,
        redis: RedisClient,
        *,
        prefix: str = "cv",
        schedules: Iterable[Schedule] = (),
        grace_s: float = DEFAULT_GRACE_S,
        lease_s: float = DEFAULT_LEASE_S,
        max_sleep_s: float = DEFAULT_MAX_SLEEP_S,
        maintenance_interval_s: float | None = DEFAULT_MAINTENANCE_INTERVAL_S,
        maintenance: Maintenance | None = None,
        clock: Clock | None = None,
        builtins: Iterable[Builtin] = (),
    ) -> None:
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (grace_s, lease_s, max_sleep_s)) or (
            grace_s < 0 or lease_s < MIN_LEASE_S or max_sleep_s <= 0
        ):
            raise ConveyorError(f"grace_s must be >= 0, lease_s >= {MIN_LEASE_S} and max_sleep_s > 0 "
                                "(finite numbers of seconds)")
        self.client = redis
        self.store = ScheduleStore(redis, prefix, clock=clock)
        self.declared = list(schedules)
        self.maintains = maintenance_interval_s is not None
        if maintenance_interval_s is not None:
            try:
                self.declared.append(maintenance_schedule(maintenance_interval_s))
            except InvalidScheduleError as exc:  # a bad setting, named as the operator set it
                raise ConfigurationError(f"maintenance interval (maintenance_interval_s, --maintenance-interval): "
                                         f"{exc}") from None
        self.maintenance = maintenance or Maintenance(redis, prefix)
        self.builtins = list(builtins)
        self.declared += [b.schedule for b in self.builtins]
        self._runs: dict[str, Callable[[int], Awaitable[object]]] = {b.schedule.id: b.run for b in self.builtins}
        if self.maintains:
            self._runs[MAINTENANCE_ID] = self.maintenance.scheduled_run
        self.grace_ms = int(grace_s * 1000)
        self.lease_ms = int(lease_s * 1000)
        # Blocking reads share the client, whose socket timeout is 10 s: stay well under it.
        self.max_sleep_ms = min(int(max_sleep_s * 1000), _MAX_BLOCK_MS)
        self.token = secrets.token_hex(8)
        self.stats = SchedulerStats()
        self._task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._cursor = "0-0"
        self._claims_made = 0
        self._inflight: dict[str, asyncio.Task[None]] = {}  # built-in runs of this process, by schedule
        self._stopped: list[Claimed] = []  # claims of runs that close() stopped: released once all ended
        self._broken: dict[str, str] = {}  # schedule id -> the unreadable definition already warned about

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Sync declared schedules, then run passes in the background until `close()`."""
        if self._task is not None:
            return
        await self.sync()
        for builtin in self.builtins:
            if builtin.setup is not None:
                await builtin.setup()
        self._cursor = await self._last_change_id()
        self._task = asyncio.create_task(self._loop(), name="conveyor-scheduler")

    async def run(self) -> None:
        await self.start()
        await self._closed.wait()
        await self.close()

    async def close(self) -> None:
        """Stop the passes and the built-in runs, then release the claims of the runs it stopped,
        only once every run has ended, so another scheduler takes them over without waiting for the
        lease and never beside a run of this one."""
        self._closed.set()
        while tasks := [t for t in (self._task, *self._background) if t is not None and not t.done()]:
            await cancel_and_wait(tasks)  # again: a pass may have started a run while it was cancelled
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._task = None
        self._background.clear()
        stopped, self._stopped = self._stopped, []
        for claimed in stopped:
            await self._release(claimed)

    async def _release(self, claimed: Claimed) -> None:
        try:
            await self.store.scripts.release(claimed.schedule_id, claimed.token, await self.store.now_ms())
        except (ConveyorError, RedisError, OSError) as exc:  # it lapses after its lease instead
            logger.warning("%s: claim not released on close (taken over after its lease): %s",
                           claimed.schedule_id, exc)

    async def sync(self) -> None:
        for schedule in self.declared:
            await self.store.put(schedule, keep_paused=True)
        if not self.maintains:
            await self._remove_maintenance()

    async def _remove_maintenance(self) -> None:
        """Delete the maintenance schedule a scheduler with maintenance stored (an earlier run of this
        deployment), so it stops firing; one started with maintenance again declares it again."""
        try:
            await self.store.delete(MAINTENANCE_ID)
        except ScheduleNotFoundError:
            return
        logger.info("maintenance is turned off: removed the stored %s schedule", MAINTENANCE_ID)

    # ------------------------------------------------------------------ passes

    async def run_due(self) -> int | None:
        """One pass: fire every due schedule this process can claim. Returns when the next pass is
        needed (epoch ms on the scheduler clock; None = nothing scheduled)."""
        self.stats.passes += 1
        while True:
            # Before reading the time the claim's expiry is counted from: its lease surely lasts from here.
            claimed_at = time.monotonic()
            now = await self.store.now_ms()
            self._claims_made += 1
            token = f"{self.token}.{self._claims_made}"  # one per claim call: a later claim is another
            wake, claimed = await self.store.scripts.claim(
                now, token, self.lease_ms, _CLAIM_BATCH, self.grace_ms, runs=list(self._runs)
            )
            for c in claimed:
                await self._fire(c, now, claimed_at)
            if len(claimed) < _CLAIM_BATCH:
                return wake

    async def _fire(self, claimed: Claimed, now: int, claimed_at: float | None = None) -> None:
        try:
            schedule, anchor = self._decode(claimed)
            if schedule is None:
                return
            p = plan(schedule, timetable(schedule, anchor), claimed.due_ms, now, self.grace_ms, claimed.since_ms)
            if schedule.paused:  # due only because of a run-now: run once, stay paused
                p = replace(p, next_ms=None)
            if schedule.kind is not ScheduleKind.JOB:
                self._start_builtin(claimed, p, now, time.monotonic() if claimed_at is None else claimed_at)
                return
            ids = [schedule.job_id(t) for t in p.fire]
            created = await enqueue_ticks(await self.store.queues.get(schedule.queue), schedule, p.fire)
            self.stats.ticks_fired += len(ids)
            self.stats.jobs_created += created
            if p.skipped:
                logger.info("schedule %s: %d missed ticks not run (policy %s)", schedule.id, p.skipped,
                            schedule.missed.value)
            await self._advance(claimed, p, now, ids[-1] if ids else None)
        except (ConveyorError, RedisError, ValueError) as exc:
            # The claim stays until its lease ends, then any scheduler retries: a natural backoff.
            self.stats.errors += 1
            logger.warning(
                "schedule %s: pass failed, retried after the claim lease: %s", claimed.schedule_id, exc
            )
        except Exception:  # a definition this version cannot use: it must not stop the rest of the batch
            self.stats.errors += 1
            logger.exception("schedule %s: pass failed unexpectedly, retried after the claim lease",
                             claimed.schedule_id)

    def _decode(self, claimed: Claimed) -> tuple[Schedule | None, int]:
        """The claimed definition, or None for one that cannot be read (edited by hand): skipped with
        one warning per definition (its claim lapses and a later pass finds it still broken, or
        repaired), so it neither stops the batch nor floods the log at every lease."""
        sid = claimed.schedule_id
        try:
            decoded = decode_envelope(claimed.envelope, sid)
        except BrokenScheduleError as exc:
            self.stats.errors += 1
            digest = hashlib.sha1(claimed.envelope.encode()).hexdigest()
            if self._broken.get(sid) != digest:
                self._broken[sid] = digest
                logger.warning("schedule %s skipped until its definition is repaired: %s", sid, exc)
            else:
                logger.debug("schedule %s still cannot be read; skipped", sid)
            return None, 0
        self._broken.pop(sid, None)
        return decoded

    def _start_builtin(self, claimed: Claimed, p: Plan, now: int, claimed_at: float) -> None:
        sid = claimed.schedule_id
        if self._closed.is_set():  # claimed by a pass that close() was cancelling: hand it back
            self._stopped.append(claimed)
            return
        previous = self._inflight.get(sid)
        if previous is not None and not previous.done():
            # Its claim lapsed (renewals failed) and this process claimed it again: the old run is
            # being fenced off; the new claim is left to lapse and be retried, never a second run.
            logger.warning("%s: the previous run is still stopping; this claim is retried after its lease", sid)
            return
        run = self._runs.get(sid)
        task = asyncio.create_task(self._builtin(claimed, p, now, run, claimed_at), name=f"conveyor-{sid}")
        self._inflight[sid] = task
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(lambda t: self._inflight.pop(sid, None) if self._inflight.get(sid) is t else None)

    async def _builtin(
        self, claimed: Claimed, p: Plan, now: int, run: Callable[[int], Awaitable[object]] | None,
        claimed_at: float,
    ) -> None:
        try:
            if run is None:  # a built-in this process does not run: skip the tick
                logger.info("built-in schedule %s is not run by this scheduler; tick skipped", claimed.schedule_id)
            elif not await self._hold(claimed, run(now), claimed_at):  # due at a tick, or by run_now
                return
            await self._advance(claimed, p, now, None)
        except asyncio.CancelledError:
            if self._closed.is_set():  # the run has ended (_hold waits for it): close() releases its claim
                self._stopped.append(claimed)
            raise
        except (ConveyorError, RedisError) as exc:
            self.stats.errors += 1
            logger.warning("%s failed, retried after the claim lease: %s", claimed.schedule_id, exc)
        except Exception:
            self.stats.errors += 1
            logger.exception("%s failed unexpectedly, retried after the claim lease", claimed.schedule_id)

    async def _hold(self, claimed: Claimed, work: Awaitable[object], claimed_at: float) -> bool:
        """Run `work` while renewing its claim every third of the lease, so no other scheduler (nor
        this one) starts the same built-in while it runs. If the claim is lost (taken over after a
        freeze, reset by an edit) or cannot be renewed before the lease ends (Redis unreachable),
        the work is cancelled: a run that no longer holds its claim stops. True when it completed."""
        task: asyncio.Task[object] = asyncio.ensure_future(work)
        lease_s = self.lease_ms / 1000
        held_until = claimed_at + lease_s  # by this process's clock, never later than by Redis's
        try:
            while True:
                wait_s = min(lease_s / 3, held_until - time.monotonic())
                if wait_s > 0:
                    done, _ = await asyncio.wait({task}, timeout=wait_s)
                    if done:
                        task.result()
                        return True
                if time.monotonic() >= held_until:
                    return self._lost(claimed, "its lease ran out before it could be renewed")
                sent = time.monotonic()
                try:
                    renewed = await self.store.scripts.renew(
                        claimed.schedule_id, claimed.token, await self.store.now_ms(), self.lease_ms
                    )
                except (RedisError, OSError) as exc:
                    logger.warning("%s: claim renewal failed (retried): %s", claimed.schedule_id, exc)
                    continue
                if not renewed:
                    return self._lost(claimed, "another scheduler holds its claim now")
                held_until = sent + lease_s
        finally:
            await _stop(task)

    def _lost(self, claimed: Claimed, why: str) -> bool:
        self.stats.lost_claims += 1
        logger.warning("%s: run stopped, %s", claimed.schedule_id, why)
        return False

    async def _advance(self, claimed: Claimed, p: Plan, now: int, job_id: str | None) -> None:
        last = ""
        if p.fire or p.skipped:
            last = codec.dumps({"tick_ms": p.fire[-1] if p.fire else None, "job_id": job_id,
                                "fired": len(p.fire), "skipped": p.skipped, "at_ms": now}).decode()
        scripts = self.store.scripts
        token = claimed.token or self.token
        if not await scripts.advance(claimed.schedule_id, token, claimed.due_ms, p.next_ms, last):
            self.stats.lost_claims += 1

    # ------------------------------------------------------------------ waiting

    async def _loop(self) -> None:
        backoff = 0.1
        failed = False
        while not self._closed.is_set():
            try:
                if failed:  # Redis may have restarted without its data: declare what went missing
                    await self._restore()
                    failed = False
                wake = await self.run_due()
                now = await self.store.now_ms()
                sleep_ms = self.max_sleep_ms if wake is None else min(self.max_sleep_ms, wake - now)
                if sleep_ms > 0:
                    await self._wait_for_change(sleep_ms)
                backoff = 0.1
            except Exception as exc:  # keep scheduling whatever one pass hit; Redis errors are expected
                failed = True
                self.stats.errors += 1
                if isinstance(exc, ConveyorError | RedisError | OSError):
                    logger.warning("scheduler pass failed (retrying in %.1fs): %s", backoff, exc)
                else:
                    logger.exception("scheduler pass failed unexpectedly (retrying in %.1fs)", backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _restore(self) -> None:
        """After a failed pass: write again the declared schedules Redis no longer has (a restart
        that lost its data, a failover to a replica that had not got them) and rerun the built-ins'
        setup (their declared rules), as at start. Present schedules are left alone."""
        ids = [s.id for s in self.declared]
        stored = await self.client.hmget(self.store.keys.defs, ids) if ids else []
        missing = [s for s, env in zip(self.declared, stored, strict=True) if env is None]
        if not missing:
            return
        logger.warning("%d declared schedules are missing from Redis (restarted without its data?); "
                       "writing them again", len(missing))
        for schedule in missing:
            await self.store.put(schedule, keep_paused=True)
        for builtin in self.builtins:
            if builtin.setup is not None:
                await builtin.setup()
        self._cursor = await self._last_change_id()

    async def _last_change_id(self) -> str:
        last = await self.client.xrevrange(self.store.keys.changes, count=1)
        return str(last[0][0]) if last else "0-0"

    async def _wait_for_change(self, timeout_ms: int) -> None:
        """Block on the changes stream for up to `timeout_ms` (woken early by any change)."""
        reply: Any = await self.client.xread(
            {self.store.keys.changes: self._cursor}, count=100, block=timeout_ms
        )
        if reply:
            entries = reply[0][1] if isinstance(reply, list) else next(iter(reply.values()))[0]
            if entries:
                self._cursor = str(entries[-1][0])


async def _stop(task: asyncio.Task[object]) -> None:
    """Cancel `task` and return only once it has ended, even if the caller is cancelled meanwhile
    (then CancelledError is raised after): a run whose holder goes on (advances, or closes and hands
    its claim back) must have stopped, or another scheduler could start it beside this one."""
    interrupted = False
    while not task.done():
        try:
            await cancel_and_wait([task])
        except asyncio.CancelledError:
            interrupted = True
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
    if interrupted:
        raise asyncio.CancelledError
