"""Tick computation: cron in time zones across DST transitions, intervals, and missed-tick plans."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from conveyor.errors import InvalidScheduleError
from conveyor.schedules import CronTimetable, IntervalTimetable, MissedPolicy, Schedule
from conveyor.schedules.model import from_ms, job_id_tick, to_ms
from conveyor.schedules.timetable import plan, ticks_in

MADRID = ZoneInfo("Europe/Madrid")
NEW_YORK = ZoneInfo("America/New_York")


def local_ticks(expr: str, zone: ZoneInfo, start: datetime, n: int) -> list[str]:
    tt = CronTimetable(expr, str(zone))
    t = to_ms(start)
    out = []
    for _ in range(n):
        nxt = tt.next_after(t)
        assert nxt is not None and nxt > t
        t = nxt
        out.append(from_ms(t).astimezone(zone).strftime("%m-%d %H:%M %Z"))
    return out


def test_daily_0230_on_spring_forward_runs_once_at_the_shifted_time() -> None:
    # Madrid 2024-03-31: 02:00 CET jumps to 03:00 CEST, so 02:30 does not exist that day.
    got = local_ticks("30 2 * * *", MADRID, datetime(2024, 3, 29, 12, tzinfo=MADRID), 4)
    assert got == ["03-30 02:30 CET", "03-31 03:30 CEST", "04-01 02:30 CEST", "04-02 02:30 CEST"]


def test_daily_0230_on_fall_back_runs_once() -> None:
    # Madrid 2024-10-27: 03:00 CEST goes back to 02:00 CET, so 02:30 happens twice; run the first.
    got = local_ticks("30 2 * * *", MADRID, datetime(2024, 10, 25, 12, tzinfo=MADRID), 4)
    assert got == ["10-26 02:30 CEST", "10-27 02:30 CEST", "10-28 02:30 CET", "10-29 02:30 CET"]


def test_fixed_time_job_in_new_york_across_both_transitions() -> None:
    spring = local_ticks("30 2 * * *", NEW_YORK, datetime(2024, 3, 9, 12, tzinfo=NEW_YORK), 3)
    assert spring == ["03-10 03:30 EDT", "03-11 02:30 EDT", "03-12 02:30 EDT"]
    fall = local_ticks("30 1 * * *", NEW_YORK, datetime(2024, 11, 2, 12, tzinfo=NEW_YORK), 3)
    assert fall == ["11-03 01:30 EDT", "11-04 01:30 EST", "11-05 01:30 EST"]


def test_wildcard_jobs_follow_real_time_across_transitions() -> None:
    # Spring forward: the skipped hour's half-hours do not exist; nothing runs twice.
    spring = local_ticks("*/30 * * * *", MADRID, datetime(2024, 3, 31, 0, 50, tzinfo=MADRID), 4)
    assert spring == ["03-31 01:00 CET", "03-31 01:30 CET", "03-31 03:00 CEST", "03-31 03:30 CEST"]
    # Fall back: the repeated hour runs in both occurrences, so it stays every 30 real minutes.
    start = datetime(2024, 10, 27, 1, 10, tzinfo=MADRID)
    fall = local_ticks("*/30 * * * *", MADRID, start, 6)
    assert fall == ["10-27 01:30 CEST", "10-27 02:00 CEST", "10-27 02:30 CEST",
                    "10-27 02:00 CET", "10-27 02:30 CET", "10-27 03:00 CET"]
    ticks = [to_ms(datetime(2024, 10, 27, 1, 30, tzinfo=MADRID)) + i * 1_800_000 for i in range(6)]
    tt = CronTimetable("*/30 * * * *", "Europe/Madrid")
    assert ticks_in(tt, to_ms(start), ticks[-1], 100) == ticks


def test_next_after_from_inside_the_repeated_hour() -> None:
    tt = CronTimetable("*/15 * * * *", "Europe/Madrid")
    # 02:20 CEST (first pass through 02:xx) -> 02:30 CEST, not 02:30 CET an hour later.
    first = datetime(2024, 10, 27, 0, 20, tzinfo=UTC)
    assert from_ms(tt.next_after(to_ms(first)) or 0) == datetime(2024, 10, 27, 0, 30, tzinfo=UTC)
    # 02:10 CET (second pass) -> 02:15 CET.
    second = datetime(2024, 10, 27, 1, 10, tzinfo=UTC)
    assert from_ms(tt.next_after(to_ms(second)) or 0) == datetime(2024, 10, 27, 1, 15, tzinfo=UTC)


def test_start_and_end_bound_cron_ticks() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    tt = CronTimetable("0 * * * *", "UTC", to_ms(start), to_ms(datetime(2030, 1, 1, 2, tzinfo=UTC)))
    first = tt.next_after(0)
    assert first == to_ms(start)
    assert tt.next_after(to_ms(datetime(2030, 1, 1, 2, tzinfo=UTC))) is None


def test_interval_ticks_are_a_grid_from_the_anchor() -> None:
    tt = IntervalTimetable(anchor_ms=1000, interval_ms=250, end_ms=2000)
    assert tt.next_after(0) == 1000
    assert tt.next_after(1000) == 1250
    assert tt.next_after(1249) == 1250
    assert tt.next_after(1999) == 2000
    assert tt.next_after(2000) is None
    assert ticks_in(tt, 999, 2000, 100) == [1000, 1250, 1500, 1750, 2000]
    assert ticks_in(tt, 999, 2000, 2) == [1750, 2000]
    assert tt.count_in(999, 2000) == 5
    assert tt.count_in(1000, 1100) == 0


def _sched(missed: MissedPolicy, cap: int = 100) -> Schedule:
    return Schedule(id="s", task="t", interval_s=1.0, missed=missed, catch_up_cap=cap)


@pytest.mark.parametrize(
    ("missed", "cap", "fire", "skipped"),
    [
        (MissedPolicy.ONCE, 100, [9000, 10000], 7),
        (MissedPolicy.ALL, 3, [7000, 8000, 9000, 10000], 5),
        (MissedPolicy.ALL, 100, [2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000], 0),
        (MissedPolicy.SKIP, 100, [10000], 8),
    ],
)
def test_plan_applies_the_missed_policy_to_late_ticks_only(
    missed: MissedPolicy, cap: int, fire: list[int], skipped: int
) -> None:
    tt = IntervalTimetable(anchor_ms=1000, interval_ms=1000)
    # Stored next run 2000; now 10400 with a 1 s grace: 2000..9000 were missed, 10000 is on time.
    p = plan(_sched(missed, cap), tt, due_ms=2000, now_ms=10_400, grace_ms=1000)
    assert p.fire == fire
    assert p.skipped == skipped
    assert p.next_ms == 11_000


def test_plan_after_a_long_gap_is_bounded_work() -> None:
    tt = IntervalTimetable(anchor_ms=0, interval_ms=10)  # 100 ticks a second, idle for ~3 years
    p = plan(_sched(MissedPolicy.ONCE), tt, due_ms=10, now_ms=10**11, grace_ms=0)
    assert p.fire == [10**11]
    cron = CronTimetable("* * * * * */5", "UTC")  # every 5 s, idle for a year
    s = Schedule(id="c", task="t", cron="* * * * * */5", missed=MissedPolicy.ALL, catch_up_cap=3)
    now = to_ms(datetime(2031, 1, 1, tzinfo=UTC))
    p = plan(s, cron, to_ms(datetime(2030, 1, 1, tzinfo=UTC)), now, 0)
    assert p.fire == [now - 10_000, now - 5000, now]
    assert p.skipped >= 1  # cron counts are a lower bound (exact counting would walk the whole gap)


def test_job_ids_carry_the_tick() -> None:
    s = Schedule(id="nightly", task="report", cron="0 3 * * *", tz="Europe/Madrid")
    assert s.job_id(1234) == "sched:nightly:1234"
    assert job_id_tick(s.job_id(1234)) == 1234
    assert job_id_tick("sched:nightly:run-5") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* *"}, "5 or 6 fields"),
        ({"cron": "0 0 30 2 *"}, "matches no date"),
        ({"cron": "0 0 31 4,6 *"}, "matches no date"),
        ({"cron": "0 3 * * *", "interval_s": 5}, "exactly one"),
        ({}, "exactly one"),
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": 5, "tz": "Mars/Olympus"}, "time zone"),
        ({"interval_s": 5, "options": {"job_id": "x"}}, "cannot be set"),
        ({"interval_s": 5, "options": {"attempts": 0}}, "attempts"),
        ({"interval_s": 5, "missed": "sometimes"}, "sometimes"),
        ({"interval_s": 5, "catch_up_cap": 0}, "catch_up_cap"),
        ({"interval_s": 5, "start": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"interval_s": 5, "id": "bad id"}, "schedule id"),
        ({"interval_s": 5, "data": "x" * 70_000}, "bytes"),
    ],
)
def test_bad_definitions_raise_a_specific_error(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"id": "s", "task": "t", **kwargs}
    with pytest.raises(InvalidScheduleError, match=message):
        Schedule(**args)  # type: ignore[arg-type]


def test_rare_cron_dates_are_accepted_and_fire_on_them() -> None:
    s = Schedule(id="leap", task="t", cron="0 0 29 2 *")
    tick = CronTimetable(s.cron or "", "UTC").next_after(to_ms(datetime(2026, 11, 30, tzinfo=UTC)))
    assert tick == to_ms(datetime(2028, 2, 29, tzinfo=UTC))


def test_a_cron_matching_no_date_has_no_next_tick() -> None:
    """A timetable built without the model's check (a definition stored by an older version)."""
    assert CronTimetable("0 0 30 2 *", "UTC").next_after(to_ms(datetime(2026, 11, 30, tzinfo=UTC))) is None


def test_json_round_trip() -> None:
    s = Schedule(id="s", task="t", queue="q", data={"a": 1}, options={"attempts": 3, "backoff": 2.0},
                 cron="0 3 * * *", tz="Europe/Madrid", start=datetime(2030, 1, 1, tzinfo=UTC),
                 missed=MissedPolicy.ALL, catch_up_cap=5)
    assert Schedule.from_json(s.to_json()) == s
    assert s.options == {"attempts": 3, "backoff": {"type": "fixed", "delay": 2.0}}


@pytest.mark.parametrize(
    ("zone", "transition"),
    [(MADRID, datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # spring forward: 02:00 -> 03:00
     (MADRID, datetime(2026, 10, 25, 1, 0, tzinfo=UTC))],  # fall back: 03:00 -> 02:00
)
def test_a_cron_with_seconds_near_a_transition_is_bounded_work(
    monkeypatch: pytest.MonkeyPatch, zone: ZoneInfo, transition: datetime
) -> None:
    """Every second, in a zone with DST, across a transition: each real second is a tick (wildcard
    jobs follow real time), and each tick costs a few cron steps, not hours of them."""
    from croniter import croniter

    steps = 0
    get_next = croniter.get_next

    def counted(self: croniter, *args: object, **kwargs: object) -> object:
        nonlocal steps
        steps += 1
        return get_next(self, *args, **kwargs)

    monkeypatch.setattr(croniter, "get_next", counted)
    s = Schedule(id="c", task="t", cron="* * * * * *", tz=str(zone))
    tt = CronTimetable("* * * * * *", str(zone))
    now = to_ms(transition) + 15_000
    p = plan(s, tt, due_ms=to_ms(transition) - 15_000, now_ms=now, grace_ms=30_000)
    assert p.fire == list(range(to_ms(transition) - 15_000, now + 1, 1000))
    assert p.next_ms == now + 1000
    assert steps <= 20 * (len(p.fire) + 1)  # before: about 20,000 per tick near a transition
