"""Upstream backpressure: a 429 with Retry-After pauses the whole fleet (or only the job's group)
for that long, the job goes back without using an attempt, then work resumes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from aiohttp import web

from conveyor import JobOptions, JobSpec, Queue, RateLimited, Worker
from conveyor.limits.http import parse_retry_after, raise_for_rate_limit
from conveyor.testing import free_port
from tests.conftest import running, wait_for
from tests.limits.conftest import claim_records


class Upstream:
    """A real HTTP server that answers 429 (Retry-After: 2) to its `limit_at`-th request."""

    def __init__(self, limit_at: int, retry_after: str = "2") -> None:
        self.limit_at = limit_at
        self.retry_after = retry_after
        self.requests: list[tuple[float, str, int]] = []  # (epoch s, job id, status)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/call"

    async def handle(self, request: web.Request) -> web.Response:
        status = 429 if len(self.requests) + 1 == self.limit_at else 200
        self.requests.append((time.time(), request.query.get("job", ""), status))
        if status == 429:
            return web.Response(status=429, headers={"Retry-After": self.retry_after}, text="slow down")
        return web.json_response({"ok": True})


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream(limit_at=5)
    app = web.Application()
    app.router.add_get("/call", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", server.port)
    await site.start()
    yield server
    await runner.cleanup()


async def test_429_pauses_the_whole_fleet_then_resumes(sq: Queue, fleet, upstream: Upstream) -> None:
    jobs = await sq.add_bulk([JobSpec("http", {"url": upstream.url}) for _ in range(30)])
    f = fleet(sq.name).start(processes=3, concurrency=2)

    async def done() -> bool:
        f.check_alive()
        return (await sq.counts())["completed"] == 30

    await wait_for(done, timeout=60, interval=0.1, what="30 http jobs done")
    limited = [job_id for _, job_id, status in upstream.requests if status == 429]
    assert len(limited) == 1
    blocked_until = int(await sq.client.hget(sq.keys.limits, "blk"))
    block_start = blocked_until - 2000
    starts = [int(r["started"]) for r in await claim_records(sq)]
    # Strictly after the blocking script's own millisecond: a claim by another script that ran just
    # before it, in the same millisecond, carries the same Redis timestamp and is legitimate.
    assert not [s for s in starts if block_start < s < blocked_until], "no claim while blocked"
    assert len([s for s in starts if s >= blocked_until]) >= 1, "claiming resumed"
    # The server saw no request in the pause (past the runs that were already in flight).
    quiet = [t for t, _, _ in upstream.requests if block_start / 1000 + 1.0 <= t < blocked_until / 1000 - 0.05]
    assert quiet == []
    # The limited job went back without using an attempt and then succeeded.
    record = await sq.get_job(limited[0])
    assert record is not None and record.attempts_made == 1 and record.state.value == "completed"
    assert {j.id for j in jobs} == {r["id"] for r in await claim_records(sq)}


async def test_rate_limited_group_pauses_only_that_group(sq: Queue) -> None:
    limited_once: list[str] = []

    async def handler(ctx, data) -> str:
        if ctx.group == "slow" and not limited_once:
            limited_once.append(ctx.job_id)
            raise RateLimited(retry_after=1.5)
        return ctx.group or ""

    await sq.add_bulk([JobSpec("x", i, JobOptions(group=g)) for i in range(20) for g in ("slow", "fast")])
    async with running(Worker(sq, {"x": handler}, concurrency=1)):
        await wait_for(lambda: _completed(sq, 40), timeout=30, what="40 jobs done")
    blocked_until = int(await sq.client.hget(sq.keys.group("slow"), "blk"))
    start = blocked_until - 1500
    records = await claim_records(sq)
    slow = [int(r["started"]) for r in records if r["group"] == "slow"]
    fast = [int(r["started"]) for r in records if r["group"] == "fast"]
    fast_in_pause = [s for s in fast if start <= s < blocked_until]
    assert not [s for s in slow if start <= s < blocked_until]
    assert len(fast_in_pause) >= 5, "the other group kept running during the pause"
    assert await sq.client.hget(sq.keys.limits, "blk") is None  # the queue itself was never blocked


async def _completed(queue: Queue, n: int) -> bool:
    return (await queue.counts())["completed"] >= n


async def test_idle_limited_workers_do_not_poll(redis_url: str, sq: Queue) -> None:
    """While a limit keeps them waiting, workers sleep until it reopens instead of polling Redis."""
    from conveyor.limits import RateLimit

    await sq.set_limits(rate=RateLimit(1, per_s=3))
    await sq.add_bulk([JobSpec("x", i) for i in range(3)])

    async def handler(ctx, data) -> None:
        return None

    # No stalled-job sweep in the window (its interval is a minute): only claims and finishes count.
    workers = [Worker(sq, {"x": handler}, concurrency=5, idle_block_s=30, stalled_interval_ms=60_000)
               for _ in range(3)]
    for w in workers:
        await w.start()
    try:
        await wait_for(lambda: _completed(sq, 1), timeout=30, what="first job")
        before = await _script_calls(sq)
        await wait_for(lambda: _completed(sq, 2), timeout=30, what="second job after the limiter reopens")
        calls = await _script_calls(sq) - before
        # Between two admissions (3 s apart), each of the 3 workers sleeps until the limiter reopens:
        # a claim when it does, the finish of the job one of them got, and at most one claim each
        # that a wake-up marker (the chain wake of the claim that left a job behind) sets off.
        # A polling worker would make hundreds of calls in that time.
        assert calls <= 3 * 3, f"{calls} script calls between two admissions from 3 limited workers"
    finally:
        for w in workers:
            await w.close()


async def _script_calls(queue: Queue) -> int:
    """Script calls (claims, finishes, sweeps) the server has run so far, from its command stats."""
    stats = await queue.client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def test_parse_retry_after_seconds_and_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    for bad in (None, "", "soon", "nan", "-3", "x" * 500):
        assert parse_retry_after(bad) is None


def test_raise_for_rate_limit_on_real_responses() -> None:
    with pytest.raises(RateLimited) as info:
        raise_for_rate_limit(httpx.Response(429, headers={"Retry-After": "7"}))
    assert info.value.retry_after == 7.0
    with pytest.raises(RateLimited) as info:
        raise_for_rate_limit(httpx.Response(429), default_retry_after=3)
    assert info.value.retry_after == 3.0
    with pytest.raises(RateLimited) as info:
        raise_for_rate_limit(httpx.Response(429, headers={"Retry-After": "999999"}), max_retry_after=60)
    assert info.value.retry_after == 60.0
    with pytest.raises(RateLimited):
        raise_for_rate_limit(httpx.Response(503, headers={"Retry-After": "1"}))
    raise_for_rate_limit(httpx.Response(503))  # a plain 503 is an ordinary error, not backpressure
    raise_for_rate_limit(httpx.Response(200, headers={"Retry-After": "5"}))
