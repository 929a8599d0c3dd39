"""The alert state machine, step by step (pure: no Redis)."""

from __future__ import annotations

from conveyor.alerts import NoticeKind, Reading, Status, parse_rule
from conveyor.alerts.state import AlertState, step

CHANNELS = [{"type": "webhook", "url": "https://alerts.example/hook"}]


def rule(**extra: object) -> object:
    return parse_rule({"kind": "queue_depth", "id": "r", "queue": "q", "threshold": 5, "channels": CHANNELS,
                       **extra})


ON, OFF = Reading(True, 9, "9 jobs"), Reading(False, 1, "1 job")


def test_fires_once_repeats_at_the_interval_and_recovers() -> None:
    r = rule(repeat_s=60)
    s, notices = step(r, AlertState(), ON, 1_000)  # type: ignore[arg-type]
    assert s.status is Status.FIRING and [n.kind for n in notices] == [NoticeKind.FIRED]
    assert (s.episode, s.seq, notices[0].id) == (1, 1, "r:1:1")
    s, notices = step(r, s, ON, 30_000)  # type: ignore[arg-type]
    assert notices == [] and s.status is Status.FIRING  # not yet due to repeat
    s, notices = step(r, s, ON, 61_000)  # type: ignore[arg-type]
    assert [n.kind for n in notices] == [NoticeKind.REPEAT] and notices[0].id == "r:1:2"
    s, notices = step(r, s, OFF, 70_000)  # type: ignore[arg-type]
    assert s.status is Status.FIRING and notices == []  # clear once: not yet resolved
    s, notices = step(r, s, OFF, 75_000)  # type: ignore[arg-type]
    assert s.status is Status.OK and [n.kind for n in notices] == [NoticeKind.RESOLVED]
    assert notices[0].id == "r:1:3" and notices[0].fired_ms == 1_000
    s, notices = step(r, s, ON, 80_000)  # type: ignore[arg-type]
    assert notices[0].id == "r:2:1"  # a new episode


def test_for_s_waits_in_pending_and_a_blip_does_not_fire() -> None:
    r = rule(for_s=30, repeat_s=None)
    s, notices = step(r, AlertState(), ON, 0)  # type: ignore[arg-type]
    assert s.status is Status.PENDING and notices == []
    s, notices = step(r, s, OFF, 10_000)  # type: ignore[arg-type]
    assert s.status is Status.OK and notices == []  # cleared before for_s: nothing sent
    s, _ = step(r, s, ON, 20_000)  # type: ignore[arg-type]
    s, notices = step(r, s, ON, 49_000)  # type: ignore[arg-type]
    assert s.status is Status.PENDING and notices == []
    s, notices = step(r, s, ON, 50_000)  # type: ignore[arg-type]
    assert s.status is Status.FIRING and s.since_ms == 20_000 and len(notices) == 1
    s, notices = step(r, s, ON, 10_000_000)  # type: ignore[arg-type]
    assert notices == []  # repeat_s None: never repeats


def test_disabled_rule_ends_its_alert_silently() -> None:
    r = rule()
    s, _ = step(r, AlertState(), ON, 0)  # type: ignore[arg-type]
    s, notices = step(r, s, None, 1)  # type: ignore[arg-type]
    assert s.status is Status.OK and notices == []


def test_a_flapping_condition_keeps_one_episode_firing_and_counts_its_flaps() -> None:
    """for_s=0 and a condition that alternates at every evaluation: one `fired`, then nothing until
    the condition stays clear for two evaluations in a row; the returns are counted."""
    r = rule(repeat_s=None)
    s, sent = AlertState(), []
    for i in range(20):
        s, notices = step(r, s, ON if i % 2 == 0 else OFF, i * 15_000)  # type: ignore[arg-type]
        sent += notices
    assert [n.kind for n in sent] == [NoticeKind.FIRED]
    assert s.status is Status.FIRING and s.flaps == 9 and s.cleared_ms == 19 * 15_000
    s, notices = step(r, s, OFF, 20 * 15_000)  # type: ignore[arg-type]
    assert s.status is Status.OK and [n.kind for n in notices] == [NoticeKind.RESOLVED]
    assert s.cleared_ms is None and s.flaps == 9  # kept with the episode it belongs to
    s, notices = step(r, s, ON, 21 * 15_000)  # type: ignore[arg-type]
    assert notices[0].id == "r:2:1" and s.flaps == 0


def test_resolve_s_holds_the_resolve_until_clear_that_long() -> None:
    r = rule(resolve_s=60, repeat_s=None)
    s, _ = step(r, AlertState(), ON, 0)  # type: ignore[arg-type]
    s, notices = step(r, s, OFF, 10_000)  # type: ignore[arg-type]
    s, notices = step(r, s, OFF, 40_000)  # type: ignore[arg-type]
    assert s.status is Status.FIRING and notices == []  # clear for 30 s of the 60
    s, notices = step(r, s, OFF, 70_000)  # type: ignore[arg-type]
    assert s.status is Status.OK and [n.kind for n in notices] == [NoticeKind.RESOLVED]


def test_a_disabled_rule_clears_a_pending_resolve() -> None:
    r = rule()
    s, _ = step(r, AlertState(), ON, 0)  # type: ignore[arg-type]
    s, _ = step(r, s, OFF, 1)  # type: ignore[arg-type]
    s, notices = step(r, s, None, 2)  # type: ignore[arg-type]
    assert s.status is Status.OK and s.cleared_ms is None and notices == []
