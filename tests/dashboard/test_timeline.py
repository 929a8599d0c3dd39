"""Attempts rebuilt from a job's events: outcomes, durations, workers, and hidden log lines."""

from __future__ import annotations

from conveyor.dashboard.timeline import build_timeline
from conveyor.events import Event
from conveyor.job import JobRecord, JobState


def ev(ms: int, kind: str, **fields: str) -> Event:
    return Event(f"{ms}-0", kind, "7", fields)


def record() -> JobRecord:
    return JobRecord(id="7", queue="q", name="n", data=None, state=JobState.COMPLETED, worker="w-last")


def test_attempts_with_outcomes_durations_and_workers() -> None:
    events = [
        ev(1000, "added", name="n"),
        ev(1010, "active", att="1", worker="w-1"),
        ev(1250, "retrying", att="1", delay="100", error="ValueError: bad"),
        ev(1400, "active", att="2"),
        ev(1450, "stalled", stalls="1"),
        ev(1500, "active", att="3"),
        ev(1520, "log", line="secret payload"),
        ev(1600, "completed", att="3"),
    ]
    tl = build_timeline(record(), events, False, show_data=False)
    got = [(a.attempt, a.outcome, a.ended_ms and a.ended_ms - a.started_ms, a.worker) for a in tl.attempts]
    assert got == [(1, "retrying", 240, "w-1"), (2, "stalled", 50, None), (3, "completed", 100, "w-last")]
    assert tl.attempts[0].error == "ValueError: bad"
    log = next(e for e in tl.events if e["type"] == "log")
    assert "line" not in log  # withheld without read-data
    shown = build_timeline(record(), events, False, show_data=True)
    assert next(e for e in shown.events if e["type"] == "log")["line"] == "secret payload"


def test_running_attempt_has_no_end_and_manual_retry_starts_a_new_one() -> None:
    events = [
        ev(10, "active", att="1"),
        ev(20, "failed", att="1", error="boom"),
        ev(30, "waiting", reason="manual"),
        ev(40, "active", att="1"),
    ]
    tl = build_timeline(record(), events, True, show_data=True)
    assert [a.outcome for a in tl.attempts] == ["failed", None]
    assert tl.attempts[1].to_dict()["duration_ms"] is None
    assert tl.truncated is True
