"""A handler's `RateLimited(retry_after=...)` blocks its group (or the queue) and puts its job back for
at most one hour; a value that names no wait (NaN, negative) waits the default second."""

from __future__ import annotations

import math
from typing import Any

import pytest

from conveyor import JobContext, Queue, RateLimited, Worker
from conveyor.errors import RATE_LIMITED_DEFAULT_S, RATE_LIMITED_MAX_S
from tests.conftest import running, wait_for

HOUR_MS = int(RATE_LIMITED_MAX_S * 1000)


async def _retrying_delay(queue: Queue, job_id: str) -> int | None:
    """The delay (ms) the job's `retrying` event carries, once written."""
    for event in await queue.read_events("0-0"):
        if event.type == "retrying" and event.job_id == job_id:
            return int(event.fields["delay"])
    return None


@pytest.mark.parametrize(("retry_after", "expected_ms"), [
    (1e12, HOUR_MS), (math.inf, HOUR_MS), (7200.0, HOUR_MS),
    (math.nan, int(RATE_LIMITED_DEFAULT_S * 1000)), (-5.0, int(RATE_LIMITED_DEFAULT_S * 1000)),
])
@pytest.mark.parametrize("grouped", [False, True])
async def test_a_rate_limited_wait_is_capped_at_one_hour(
    sq: Queue, retry_after: float, expected_ms: int, grouped: bool
) -> None:
    """Before, a huge value blocked the group or queue for up to 100 years (and put the job back as
    long); inf and NaN put the job back at once, blocking nothing, so it ran again and again
    without using an attempt; a negative value failed the run with a ValueError."""
    runs: list[int] = []

    async def limited(ctx: JobContext, data: Any) -> Any:
        runs.append(ctx.attempt)
        if len(runs) == 1:  # (the attempt stays 1: a rate-limited run uses none)
            raise RateLimited(retry_after=retry_after)
        return data

    group = {"group": "g"} if grouped else {}
    job = await sq.add("limited", 1, **group)  # type: ignore[arg-type]
    worker = Worker(sq, {"limited": limited})
    async with running(worker):
        async def recorded() -> bool:
            return await _retrying_delay(sq, job.id) is not None

        await wait_for(recorded, what="the job put back")
        assert await _retrying_delay(sq, job.id) == expected_ms
        if expected_ms < HOUR_MS:  # the default wait: the job runs again, without using an attempt
            assert await job.result(timeout=30) == 1
            assert runs == [1, 1]
    if expected_ms == HOUR_MS:
        (_, due), = await sq.client.zrange(sq.keys.delayed, 0, 0, withscores=True)
        seconds, micros = await sq.client.time()
        now_ms = seconds * 1000 + micros // 1000
        assert due - now_ms <= HOUR_MS
        blocked_until = await sq.client.hget(sq.keys.group("g") if grouped else sq.keys.limits, "blk")
        assert 0 < int(blocked_until) - now_ms <= HOUR_MS


def test_the_signal_holds_the_wait_it_will_have() -> None:
    assert RateLimited(retry_after=1e12).retry_after == RATE_LIMITED_MAX_S
    assert RateLimited(retry_after=-1).retry_after == RATE_LIMITED_DEFAULT_S
    assert RateLimited(retry_after=math.nan).retry_after == RATE_LIMITED_DEFAULT_S
    assert RateLimited(retry_after=2.5).retry_after == 2.5
