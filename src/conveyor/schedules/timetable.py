"""Tick computation: when a schedule fires, and which ticks a scheduler fires after a gap.

Cron expressions are matched against local wall-clock time with croniter on naive datetimes and
mapped to instants with zoneinfo, following the rules cron users know (Vixie cron):
- fixed-time jobs (minute and hour fields without a leading '*'): a time skipped by a spring-forward
  transition runs once, shifted forward by the gap (02:30 -> 03:30); a time repeated by a fall-back
  transition runs once, at its first occurrence;
- wildcard jobs ('*' or '*/n' in the minute or hour field) follow real time: skipped local times do
  not exist, repeated local times run in both occurrences (so `*/15` stays every 15 minutes).
All ticks are epoch milliseconds (UTC) and strictly increasing.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from conveyor.schedules.model import MissedPolicy, Schedule, from_ms, to_ms

# Offsets around a transition differ by at most a few hours; iterate from that far back.
_SLACK = timedelta(hours=3)
# Windows searched (newest first) for the most recent ticks before `now`; each is bounded work.
_WINDOWS_MS = (60_000, 3_600_000, 86_400_000, 8 * 86_400_000, 32 * 86_400_000, 400 * 86_400_000)
MAX_FIRE_PER_PASS = 1000


class Timetable(Protocol):
    def next_after(self, t_ms: int) -> int | None:
        """The first tick strictly after `t_ms`, or None when the schedule has ended."""


@dataclass(frozen=True, slots=True)
class IntervalTimetable:
    """Ticks at anchor + n * interval, so every process computes the same ticks."""

    anchor_ms: int
    interval_ms: int
    end_ms: int | None = None

    def next_after(self, t_ms: int) -> int | None:
        if t_ms < self.anchor_ms:
            tick = self.anchor_ms
        else:
            tick = self.anchor_ms + ((t_ms - self.anchor_ms) // self.interval_ms + 1) * self.interval_ms
        return None if self.end_ms is not None and tick > self.end_ms else tick

    def count_in(self, lo_ms: int, hi_ms: int) -> int:
        """How many ticks fall in (lo, hi], without enumerating them."""
        first = self.next_after(lo_ms)
        if first is None or first > hi_ms:
            return 0
        last = hi_ms if self.end_ms is None else min(hi_ms, self.end_ms)
        return (last - first) // self.interval_ms + 1


class CronTimetable:
    """Cron ticks in a time zone, with the daylight-saving rules described above."""

    def __init__(self, expr: str, tz: str, start_ms: int | None = None, end_ms: int | None = None) -> None:
        self.expr = expr
        self.zone = ZoneInfo(tz)
        self.start_ms = start_ms
        self.end_ms = end_ms
        fields = expr.split()
        self.wildcard = fields[0].startswith("*") or fields[1].startswith("*")

    def _instants(self, local: datetime) -> list[datetime]:
        """The instants at which a naive local wall-clock time occurs, by the rules above."""
        first = local.replace(tzinfo=self.zone, fold=0)
        second = local.replace(tzinfo=self.zone, fold=1)
        u0, u1 = first.astimezone(UTC), second.astimezone(UTC)
        exists = u0.astimezone(self.zone).replace(tzinfo=None) == local
        if not exists:  # skipped by a spring-forward gap; fold=0 maps it past the gap
            return [] if self.wildcard else [u0]
        if u0 != u1 and not self.wildcard:  # repeated by a fall-back: first occurrence only
            return [u0]
        return [u0] if u0 == u1 else [u0, u1]

    def _near_transition(self, instant: datetime) -> bool:
        return (instant - _SLACK).astimezone(self.zone).utcoffset() != (instant + _SLACK).astimezone(
            self.zone
        ).utcoffset()

    def next_after(self, t_ms: int) -> int | None:
        if self.start_ms is not None and t_ms < self.start_ms:
            t_ms = self.start_ms - 1
        after = from_ms(t_ms)
        best = self._first(after)
        if best is not None and (self._near_transition(after) or self._near_transition(best)):
            best = self._earliest(after, best)
        if best is None:
            return None
        tick = to_ms(best)
        return None if self.end_ms is not None and tick > self.end_ms else tick

    def _first(self, after: datetime) -> datetime | None:
        """A tick after `after`: the earliest instant of the first local time (in local order) that
        has one. Away from a transition it is the next tick; near one, an upper bound of it."""
        local_after = after.astimezone(self.zone).replace(tzinfo=None, fold=0)
        it = croniter(self.expr, local_after)
        for _ in range(100_000):
            try:
                candidate = it.get_next(datetime)
            except CroniterBadDateError:  # no match within croniter's search horizon: no more ticks
                return None
            every = self._instants(candidate)
            instants = [i for i in every if i > after]
            if instants:
                return min(instants)
            if candidate - local_after > timedelta(days=4 * 366):
                return None
            if not every:  # a local time a spring-forward gap skips: go on from the gap's end
                past = candidate.replace(tzinfo=self.zone, fold=0).astimezone(UTC).astimezone(self.zone)
                past = past.replace(tzinfo=None)
                if past > candidate:
                    it = croniter(self.expr, past - timedelta(seconds=1))
        return None  # pragma: no cover - an expression matching nothing for years

    def _earliest(self, after: datetime, bound: datetime) -> datetime:
        """The first tick in (after, bound] near a transition, where local order and real order
        differ. Each tick is a local time minus one of the offsets in use around here: walk the
        cron's local times from `after + offset` for each offset, merged in the order of
        `local - offset`, and take the first that really maps to that instant. Every item walked
        lies between `after` and the answer, so the work is the ticks of that span, not hours of
        candidates (a cron with seconds near a transition)."""
        naive_after = after.astimezone(UTC).replace(tzinfo=None)
        offsets = {
            (x + d).astimezone(self.zone).utcoffset() for x in (after, bound) for d in (-_SLACK, _SLACK)
        }
        heap: list[tuple[datetime, int, datetime, timedelta]] = []
        walks: list[croniter] = []
        for n, offset in enumerate(sorted(o for o in offsets if o is not None)):
            walks.append(croniter(self.expr, naive_after + offset))
            self._push(heap, walks, n, offset)
        for _ in range(100_000):
            if not heap:
                break
            key, n, local, offset = heapq.heappop(heap)
            instant = key.replace(tzinfo=UTC)
            if instant >= bound:
                break
            if instant in self._instants(local):
                return instant
            self._push(heap, walks, n, offset)
        return bound

    @staticmethod
    def _push(heap: list[tuple[datetime, int, datetime, timedelta]], walks: list[croniter], n: int,
              offset: timedelta) -> None:
        try:
            local = walks[n].get_next(datetime)
        except CroniterBadDateError:
            return
        heapq.heappush(heap, (local - offset, n, local, offset))


def timetable(schedule: Schedule, anchor_ms: int) -> Timetable:
    end_ms = None if schedule.end is None else to_ms(schedule.end)
    if schedule.cron is not None:
        start_ms = None if schedule.start is None else to_ms(schedule.start)
        return CronTimetable(schedule.cron, schedule.tz, start_ms, end_ms)
    assert schedule.interval_s is not None
    return IntervalTimetable(anchor_ms, max(1, round(schedule.interval_s * 1000)), end_ms)


def first_anchor(schedule: Schedule, now_ms: int) -> int:
    """Where interval ticks start: the start date, else one interval from now."""
    if schedule.start is not None:
        return to_ms(schedule.start)
    return now_ms + round((schedule.interval_s or 0) * 1000)


def ticks_in(tt: Timetable, lo_ms: int, hi_ms: int, limit: int) -> list[int]:
    """The most recent `limit` ticks in (lo, hi]. Searches growing windows back from `hi`, so a
    long gap costs bounded work instead of iterating every tick since `lo`."""
    if limit <= 0 or hi_ms <= lo_ms:
        return []
    for window in (*_WINDOWS_MS, None):
        start = lo_ms if window is None else max(lo_ms, hi_ms - window)
        found: deque[int] = deque(maxlen=limit)
        tick = tt.next_after(start)
        while tick is not None and tick <= hi_ms:
            found.append(tick)
            tick = tt.next_after(tick)
        if len(found) >= limit or start == lo_ms:
            return list(found)
    return []  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Plan:
    """What one scheduler pass does for a due schedule."""

    fire: list[int]  # ticks to enqueue, oldest first
    next_ms: int | None  # the next run after this pass (None: the schedule has ended)
    skipped: int  # missed ticks dropped by the policy (exact for intervals, at least this many for cron)


def plan(
    schedule: Schedule, tt: Timetable, due_ms: int, now_ms: int, grace_ms: int, since_ms: int | None = None
) -> Plan:
    """Ticks to fire for a schedule whose stored next run `due_ms` is <= now.

    Ticks within `grace_ms` of `since_ms` (when live schedulers first claimed this run; now by
    default) or later are on time and always fire; older ones were missed (no scheduler was running)
    and go through the schedule's policy. A takeover passes the first claim's time, so a tick that a
    live scheduler held while another one took over is never "missed".
    """
    reference = now_ms if since_ms is None else min(since_ms, now_ms)
    on_time = ticks_in(tt, max(due_ms - 1, reference - grace_ms), now_ms, MAX_FIRE_PER_PASS)
    missed_hi = reference - grace_ms
    missed: list[int] = []
    skipped = 0
    if due_ms <= missed_hi:
        keep = {MissedPolicy.ONCE: 1, MissedPolicy.ALL: schedule.catch_up_cap}.get(schedule.missed, 0)
        probe = ticks_in(tt, due_ms - 1, missed_hi, keep + 1)
        missed = probe[-keep:] if keep else []
        exact = tt.count_in(due_ms - 1, missed_hi) if isinstance(tt, IntervalTimetable) else None
        skipped = (len(probe) if exact is None else exact) - len(missed)
    fire = (missed + on_time)[-MAX_FIRE_PER_PASS:]
    return Plan(fire, tt.next_after(now_ms), skipped)
