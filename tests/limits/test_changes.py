"""Limit changes reach running workers without a restart; limits state is visible; a queue whose
limits are cleared goes back to the plain claim path."""

from __future__ import annotations

from conveyor import JobOptions, JobSpec, Queue, Worker
from conveyor.limits import GroupLimits, RateLimit
from tests.conftest import running, wait_for
from tests.limits.conftest import claim_records


async def _completed(queue: Queue) -> int:
    return (await queue.counts())["completed"]


async def test_raising_a_rate_limit_takes_effect_on_running_fleet(sq: Queue, fleet) -> None:
    await sq.set_limits(rate=RateLimit(2, per_s=1))
    await sq.add_bulk([JobSpec("sleep", {"ms": 1}) for _ in range(40)])
    f = fleet(sq.name).start(processes=2, concurrency=5)

    async def at_least(n: int) -> bool:
        f.check_alive()
        return await _completed(sq) >= n

    await wait_for(lambda: at_least(3), timeout=30, interval=0.05, what="3 slow jobs")
    assert await _completed(sq) < 10  # still held to 2 per second
    cursor = await sq.last_event_id()
    await sq.set_limits(rate=RateLimit(1000, per_s=1, burst=50))
    await wait_for(lambda: at_least(40), timeout=60, interval=0.05, what="the rest at the new rate")
    # Counted on the limiter's own clock (the Redis time in event ids): after the change, some second
    # saw more claims than the old limit (2 per second) allows, without restarting a worker.
    claims = [int(e.id.split("-")[0]) for e in await sq.read_events(cursor, count=10_000) if e.type == "active"]
    assert max(sum(1 for t in claims if s <= t < s + 1000) for s in claims) > 2


async def test_raising_a_group_cap_takes_effect_without_restart(sq: Queue, fleet) -> None:
    await sq.set_group_limits("g", concurrency=1)
    await sq.add_bulk([JobSpec("sleep", {"ms": 150}, JobOptions(group="g")) for _ in range(30)])
    f = fleet(sq.name).start(processes=2, concurrency=5)

    async def at_least(n: int) -> bool:
        f.check_alive()
        return await _completed(sq) >= n

    await wait_for(lambda: at_least(2), timeout=30, interval=0.05, what="2 capped jobs")
    assert int(await sq.client.hget(sq.keys.group("g"), "ga")) <= 1
    await sq.set_group_limits("g", concurrency=6)

    async def wider() -> bool:
        f.check_alive()
        return int(await sq.client.hget(sq.keys.group("g"), "ga") or 0) >= 4

    await wait_for(wider, timeout=15, interval=0.01, what="more than one active job of g")
    await wait_for(lambda: at_least(30), timeout=30, interval=0.05, what="all jobs")


async def test_limits_state_shows_tokens_active_blocks_and_backlog(sq: Queue) -> None:
    await sq.set_limits(
        rate=RateLimit(10, per_s=60, burst=2), concurrency=5, cost=RateLimit(1000, per_s=60, burst=499),
        group_defaults=GroupLimits(concurrency=1),
    )
    await sq.set_group_weight("a", 2)
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="a", cost=100)) for i in range(4)])
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="b", cost=100)) for i in range(2)])
    claimed = await sq.scripts.claim("w", 60_000, 10)
    assert len(claimed[1::6]) == 2  # group cap 1 each
    state = await sq.limits_state()
    assert state["concurrency"] == {"limit": 5, "active": 2}
    assert state["rate"]["limit"] == 10 and state["rate"]["burst"] == 2
    # 3 at once, 2 used; the buckets refill while a busy machine gets here (10/min and 1000/min), so
    # the bounds allow several seconds of refill but not one charge too few.
    assert 0.99 < state["rate"]["tokens"] < 1.9
    assert 299 < state["cost"]["tokens"] < 399
    assert state["group_defaults"] == {"concurrency": 1, "rate": None, "cost": None}
    assert state["waiting"] == {"ungrouped": 0, "grouped": 4}
    groups = {g["group"]: g for g in state["groups"]["list"]}
    assert state["groups"]["capped"] == 2 and groups["a"]["state"] == "capped"
    assert groups["a"]["waiting"] == 3 and groups["a"]["active"] == 1 and groups["a"]["weight"] == 2
    assert groups["a"]["concurrency"] == 1
    stats = await sq.stats()
    assert stats["counts"]["waiting"] == 4 and stats["limits"]["concurrency"]["active"] == 2


async def test_blocked_until_is_visible_and_expires(sq: Queue) -> None:
    from conveyor import RateLimited

    limited: list[str] = []

    async def handler(ctx, data) -> None:
        if not limited:
            limited.append(ctx.job_id)
            raise RateLimited(retry_after=0.8)

    await sq.add("x", 0)
    async with running(Worker(sq, {"x": handler}, concurrency=2)) as w:
        await wait_for(lambda: w.stats.returned >= 1, timeout=10, what="rate limited once")

        seen: list[dict] = []

        async def blocked() -> bool:
            seen.append(await sq.limits_state())
            return seen[-1]["blocked_until_ms"] is not None

        await wait_for(blocked, timeout=30, what="the block recorded")
        assert 0 < seen[-1]["blocked_until_ms"] - seen[-1]["now_ms"] <= 800
        await sq.add("x", 1)
        await wait_for(lambda: _done(sq, 2), timeout=10, what="both jobs after the block")
    starts = {r["id"]: int(r["started"]) for r in await claim_records(sq)}
    blk = int(await sq.client.hget(sq.keys.limits, "blk"))
    assert all(s >= blk for s in starts.values())
    assert (await sq.limits_state())["blocked_until_ms"] is None


async def _done(queue: Queue, n: int) -> bool:
    return await _completed(queue) >= n


async def test_cleared_limits_give_back_the_plain_path(sq: Queue) -> None:
    await sq.set_limits(concurrency=2)
    assert await sq.client.hget(sq.keys.meta, "lim") == "1"
    await sq.set_limits()
    await sq.add("x", 1)

    async def handler(ctx, data) -> None:
        return None

    async with running(Worker(sq, {"x": handler}, concurrency=2)):
        await wait_for(lambda: _done(sq, 1), timeout=10)
    assert await sq.client.hget(sq.keys.meta, "lim") is None
    assert (await sq.limits_state())["limits_path"] is False
