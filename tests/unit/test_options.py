from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Exponential, Fixed, InvalidOptionError, JobOptions, JobSpec
from conveyor.backoff import BackoffPolicies, Named, parse_backoff
from conveyor.codec import dumps_canonical
from conveyor.errors import SerializationError


def test_merge_prefers_explicit_values() -> None:
    base = JobOptions(attempts=3, timeout=10, priority=1)
    merged = JobOptions(priority=5).merged_over(base)
    assert (merged.attempts, merged.timeout, merged.priority) == (3, 10, 5)


def test_stored_keeps_only_what_workers_need() -> None:
    opts = JobOptions(attempts=1, priority=3, timeout=2.5, backoff=4, delay=5)
    assert opts.stored() == {"timeout": 2.5, "backoff": {"type": "fixed", "delay": 4.0}}


def test_run_at_and_timedelta() -> None:
    opts = JobOptions(run_at=datetime.now(UTC) + timedelta(seconds=10))
    assert 9_000 < opts.delay_ms() <= 10_000
    assert JobOptions(delay=timedelta(minutes=1)).delay_ms() == 60_000
    with pytest.raises(InvalidOptionError, match="run_at must be at most 100 years ahead"):
        JobOptions(run_at=datetime(9999, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidOptionError, match="run_at must be at most 100 years ahead"):
        JobOptions.from_mapping({"run_at": "2500-01-01T00:00:00+00:00"})


@pytest.mark.parametrize(
    "bad", [{"attempts": True}, {"priority": 1.5}, {"cost": -1}, {"group": ""}, {"delay": float("nan")},
            # poison durations: beyond 100 years or under a millisecond
            {"result_ttl": 1e300}, {"result_ttl": 1e-9}, {"failed_ttl": 1e300}, {"failed_ttl": 1e-9},
            {"idempotency_ttl": 1e300}, {"idempotency_ttl": 1e-9}, {"timeout": 1e300}, {"timeout": 1e-9},
            {"delay": 1e300}, {"result_ttl": float("inf")}, {"failed_ttl": 0}]
)
def test_invalid_values(bad: dict) -> None:
    with pytest.raises(InvalidOptionError):
        JobOptions(**bad)


def test_from_mapping_rejects_unknown_and_parses_iso_dates() -> None:
    with pytest.raises(InvalidOptionError, match="unknown"):
        JobOptions.from_mapping({"retries": 3})
    opts = JobOptions.from_mapping({"run_at": "2030-01-01T00:00:00+00:00"})
    assert opts.run_at == datetime(2030, 1, 1, tzinfo=UTC)
    with pytest.raises(InvalidOptionError):
        JobSpec.from_mapping({"data": 1})


def test_backoff_policies() -> None:
    assert parse_backoff(2) == Fixed(2.0)
    exp = parse_backoff({"type": "exponential", "base": 1, "factor": 2, "jitter": False, "max": 5})
    assert [exp.seconds(a) for a in (1, 2, 3, 4)] == [1, 2, 4, 5]
    jittered = Exponential(base=8, jitter=True)
    assert all(4 <= jittered.seconds(1) <= 8 for _ in range(100))
    with pytest.raises(InvalidOptionError, match="data, never code"):
        parse_backoff(lambda a, e: 1)
    with pytest.raises(InvalidOptionError, match="data, never code"):
        parse_backoff({"type": "callable", "ref": "os:_exit"})
    assert parse_backoff({"type": "named", "name": "slow"}) == Named("slow")
    with pytest.raises(InvalidOptionError, match="policy name"):
        parse_backoff({"type": "named", "name": "os:_exit()"})
    policies = BackoffPolicies()
    policies.register("slow", lambda attempt, error: 3.0 * attempt)
    assert policies.seconds(Named("slow"), 2) == 6.0 and policies.seconds(parse_backoff(4), 9) == 4.0
    with pytest.raises(InvalidOptionError, match="no backoff policy named 'fast'"):
        policies.seconds(Named("fast"), 1)
    with pytest.raises(InvalidOptionError):
        parse_backoff({"type": "exponential", "factor": 0.5})


def test_canonical_encoding_is_order_independent() -> None:
    left = dumps_canonical({"b": 1, "a": [1, {"d": 1, "c": 2}]})
    assert left == dumps_canonical({"a": [1, {"c": 2, "d": 1}], "b": 1})
    with pytest.raises(SerializationError):
        dumps_canonical({1, 2})


def test_durations_at_their_bounds_are_accepted() -> None:
    hundred_years = 3_155_760_000
    opts = JobOptions(result_ttl=0, failed_ttl=0.001, idempotency_ttl=hundred_years, timeout=0.001, delay=1e-9)
    assert (opts.result_ttl, opts.failed_ttl, opts.idempotency_ttl) == (0.0, 0.001, float(hundred_years))
    assert opts.delay_ms() == 0  # a delay under a millisecond is "now"
