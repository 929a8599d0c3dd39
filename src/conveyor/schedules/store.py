"""ScheduleStore: the runtime API over schedules kept in Redis (get, put, delete, list, pause...).

Every change is read-compute-write with a version check in one script (optimistic locking), so
concurrent edits and schedulers syncing at the same moment never interleave half a change. The next
run time lives in Redis: a process only computes ticks, it never remembers them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor import codec
from conveyor.errors import BrokenScheduleError, ConveyorError, InvalidScheduleError, ScheduleNotFoundError
from conveyor.redis.connection import RedisClient
from conveyor.redis.faults import redis_call
from conveyor.schedules.enqueue import QueueCache, enqueue, enqueue_run_now, run_now_key
from conveyor.schedules.keys import ScheduleKeys
from conveyor.schedules.model import Schedule, ScheduleKind, check_schedule_id, from_ms
from conveyor.schedules.scripts import ScheduleScripts
from conveyor.schedules.timetable import first_anchor, timetable

logger = logging.getLogger(__name__)
Clock = Callable[[], Awaitable[int]]
_PUT_RETRIES = 20


@dataclass(frozen=True, slots=True)
class LastRun:
    """The latest pass that fired a schedule."""

    tick: datetime | None  # None when the pass only skipped missed ticks
    job_id: str | None
    fired: int
    skipped: int
    at: datetime

    @classmethod
    def from_json(cls, raw: str) -> LastRun:
        v = codec.loads(raw)
        tick = None if v["tick_ms"] is None else from_ms(v["tick_ms"])
        return cls(tick, v.get("job_id"), v["fired"], v["skipped"], from_ms(v["at_ms"]))


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as stored, with its run-time state."""

    schedule: Schedule
    next_run: datetime | None
    last_run: LastRun | None
    version: int
    anchor_ms: int
    next_ms: int | None

    @property
    def id(self) -> str:
        return self.schedule.id


@dataclass(frozen=True, slots=True)
class BrokenSchedule:
    """A stored schedule this version cannot read (edited by hand): listed as broken, never fired."""

    id: str
    error: str


Listing = tuple[list[ScheduleInfo], list[BrokenSchedule]]  # readable schedules, broken ones


def encode_envelope(schedule: Schedule, anchor_ms: int) -> str:
    return codec.dumps({"schedule": schedule.to_json(), "anchor_ms": anchor_ms}).decode()


def decode_envelope(raw: str, schedule_id: str) -> tuple[Schedule, int]:
    """The stored definition; BrokenScheduleError naming the schedule when it cannot be read (not
    JSON, missing fields, a definition that no longer validates), whatever the fault is."""
    try:
        v = codec.loads(raw)
        return Schedule.from_json(v["schedule"]), int(v["anchor_ms"])
    except (ConveyorError, ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        why = str(exc) or type(exc).__name__
        raise BrokenScheduleError(f"stored schedule {schedule_id!r} cannot be read ({why}); write it "
                                  "again to repair it") from None


def _last_run(raw: str | None) -> LastRun | None:
    """The last pass as stored; an entry edited by hand reads as none (the next pass writes it again)."""
    if raw is None:
        return None
    try:
        return LastRun.from_json(raw)
    except (ConveyorError, ValueError, TypeError, KeyError, AttributeError, OverflowError):
        return None


def _pending_run_now(old: ScheduleInfo | None) -> int | None:
    """The run-now a paused schedule still owes: paused schedules are absent from the next-run set
    except while a run-now is pending, so a stored next run is that request."""
    if old is None or not old.schedule.paused:
        return None
    return old.next_ms


class ScheduleStore:
    """Schedules under one key prefix. `clock` (async, epoch ms) replaces the Redis clock in tests."""

    def __init__(self, client: RedisClient, prefix: str = "cv", *, clock: Clock | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.keys = ScheduleKeys(prefix)
        self.scripts = ScheduleScripts(client, self.keys)
        self.queues = QueueCache(client, prefix)
        self._clock = clock

    async def now_ms(self) -> int:
        """The clock of the node holding the schedule keys (on a Cluster, not whichever node the
        client would send a plain TIME to): claims' expiries are compared on that one."""
        return await self._clock() if self._clock else await self.scripts.now_ms()

    # ------------------------------------------------------------------ reading

    async def find(self, schedule_id: str) -> ScheduleInfo | None:
        check_schedule_id(schedule_id)
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hget(k.defs, schedule_id)
            pipe.hget(k.versions, schedule_id)
            pipe.zscore(k.next, schedule_id)
            pipe.hget(k.last, schedule_id)
            env, ver, nxt, last = await redis_call(pipe.execute())
        if env is None:
            return None
        return self._info(schedule_id, env, ver, nxt, last)

    async def get(self, schedule_id: str) -> ScheduleInfo:
        info = await self.find(schedule_id)
        if info is None:
            raise ScheduleNotFoundError(f"schedule {schedule_id!r} not found")
        return info

    async def list(self) -> list[ScheduleInfo]:
        """Every readable schedule, by id (`listing()` also names the broken ones)."""
        return (await self.listing())[0]

    async def listing(self) -> Listing:
        """Every schedule by id, the ones that cannot be read apart: one definition edited by hand
        must not hide the others from operators."""
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.defs)
            pipe.hgetall(k.versions)
            pipe.zrange(k.next, 0, -1, withscores=True)
            pipe.hgetall(k.last)
            defs, vers, nxt, last = await redis_call(pipe.execute())
        next_of = dict(nxt)
        listing: Listing = ([], [])
        infos, broken = listing
        for i in sorted(defs):
            try:
                infos.append(self._info(i, defs[i], vers.get(i), next_of.get(i), last.get(i)))
            except BrokenScheduleError as exc:
                broken.append(BrokenSchedule(i, str(exc)))
        return infos, broken

    @staticmethod
    def _info(schedule_id: str, env: str, ver: str | None, nxt: Any, last: str | None) -> ScheduleInfo:
        schedule, anchor = decode_envelope(env, schedule_id)
        if ver is not None and not ver.isdigit():
            raise BrokenScheduleError(f"stored version of schedule {schedule_id!r} is not a number ({ver!r}); "
                                      "delete the schedule and write it again to repair it")
        try:
            next_run = None if nxt is None else from_ms(int(float(nxt)))
        except (OverflowError, ValueError):  # a next run set by hand past the calendar
            raise BrokenScheduleError(f"stored next run of schedule {schedule_id!r} is out of range ({nxt!r}); "
                                      "write the schedule again to repair it") from None
        return ScheduleInfo(
            schedule, next_run, _last_run(last), int(ver or 0), anchor, None if nxt is None else int(float(nxt))
        )

    async def _find_for_write(self, schedule_id: str) -> tuple[ScheduleInfo | None, int]:
        """The stored schedule and its version; a broken one reads as absent (the write replaces it)
        but keeps its version, so a concurrent write still conflicts."""
        try:
            old = await self.find(schedule_id)
        except BrokenScheduleError as exc:
            ver = await redis_call(self.client.hget(self.keys.versions, schedule_id))
            if ver is not None and not str(ver).isdigit():
                raise  # the version check could never pass: the message says to delete it first
            logger.warning("%s; replacing it", exc)
            return None, int(ver or 0)
        return old, 0 if old is None else old.version

    # ------------------------------------------------------------------ writing

    async def put(
        self, schedule: Schedule, *, keep_paused: bool = False, run_now: bool = False
    ) -> ScheduleInfo:
        """Create or replace a schedule. The next run is kept unless the timing changed (or it is
        resumed); `keep_paused` keeps an operator's pause across code syncs."""
        if not isinstance(schedule, Schedule):
            raise InvalidScheduleError("put() takes a Schedule")
        for _ in range(_PUT_RETRIES):
            old, version = await self._find_for_write(schedule.id)
            if keep_paused and old is not None:
                schedule = schedule.with_changes(paused=old.schedule.paused)
            now = await self.now_ms()
            same_timing = old is not None and old.schedule.fingerprint == schedule.fingerprint
            anchor = old.anchor_ms if old is not None and same_timing else first_anchor(schedule, now)
            next_ms: int | None
            pending = _pending_run_now(old)
            if run_now:  # due now, paused or not (a paused schedule runs once and stays paused)
                next_ms = now if pending is None else min(pending, now)
            elif schedule.paused:
                next_ms = pending  # a run-now asked while paused outlives syncs, edits and restarts
            elif old is not None and same_timing and not old.schedule.paused:
                next_ms = old.next_ms
            else:
                next_ms = timetable(schedule, anchor).next_after(now)
                if pending is not None and next_ms is not None:  # resumed with a run-now still owed
                    next_ms = min(pending, next_ms)
            # A new timing or a pause/resume drops a job schedule's claim, so the new next run fires
            # at once (the claimant's advance then fails). A built-in's claim is its running run's:
            # it keeps it until the run ends (its advance fails then), or another scheduler would
            # start the built-in beside it as soon as the new next run came due.
            reset = (not same_timing or (old is not None and old.schedule.paused != schedule.paused)) and (
                schedule.kind is ScheduleKind.JOB
            )
            envelope = encode_envelope(schedule, anchor)
            ok, _ = await self.scripts.put(schedule.id, version, envelope, next_ms, reset)
            if ok:
                return await self.get(schedule.id)
        raise ConveyorError(f"schedule {schedule.id!r} kept changing; gave up after {_PUT_RETRIES} tries")

    async def delete(self, schedule_id: str) -> None:
        check_schedule_id(schedule_id)
        if not await self.scripts.delete(schedule_id):
            raise ScheduleNotFoundError(f"schedule {schedule_id!r} not found")

    async def pause(self, schedule_id: str) -> ScheduleInfo:
        """Stop firing; ticks that pass while paused are not run on resume."""
        info = await self.get(schedule_id)
        return await self.put(info.schedule.with_changes(paused=True))

    async def resume(self, schedule_id: str) -> ScheduleInfo:
        """Fire again from the next tick after now."""
        info = await self.get(schedule_id)
        return await self.put(info.schedule.with_changes(paused=False))

    async def run_now(self, schedule_id: str, idempotency_key: str | None = None) -> str | None:
        """Run a schedule once now, besides its ticks. Returns the job id (None for a built-in
        schedule, maintenance or alerts, which a scheduler runs at its next pass; a paused one runs
        once and stays paused). With `idempotency_key`, a call sent again (its reply lost) returns
        the first call's job instead of adding a second run, also once that job's record was
        deleted (schedules/enqueue.py, enqueue_run_now)."""
        info = await self.get(schedule_id)
        s = info.schedule
        if s.kind is not ScheduleKind.JOB:
            await self.put(s, run_now=True)
            return None
        job_id = f"sched:{s.id}:run-{await self.now_ms()}"
        queue = await self.queues.get(s.queue)
        if idempotency_key is not None:
            marker = self.keys.run_now(run_now_key(s.id, idempotency_key))
            return await enqueue_run_now(queue, s, job_id, idempotency_key, client=self.client, marker=marker)
        await enqueue(queue, s, [job_id])
        return job_id

