"""Fair scheduling across groups: round robin (weighted when set), no group starves behind another's
backlog, priorities order jobs within a group; admin operations see grouped jobs."""

from __future__ import annotations

from collections import Counter

import pytest

from conveyor import JobOptions, JobSpec, JobState, Queue, Worker
from conveyor.errors import ConfigurationError
from conveyor.limits.model import MIN_WEIGHT
from tests.conftest import running, wait_for
from tests.limits.conftest import claim_ranks, claim_records


async def test_small_groups_start_within_first_110_claims_behind_a_5000_backlog(sq: Queue, fleet) -> None:
    big = await sq.add_bulk([JobSpec("sleep", {"ms": 0}, JobOptions(group="big")) for _ in range(5000)])
    small = await sq.add_bulk([
        JobSpec("sleep", {"ms": 0}, JobOptions(group=f"tenant-{g}")) for g in range(10) for _ in range(10)
    ])
    assert (await sq.counts())["waiting"] == 5100
    f = fleet(sq.name).start(processes=2, concurrency=10)

    async def claimed_enough() -> bool:
        f.check_alive()
        counts = await sq.counts()
        return counts[JobState.COMPLETED] + counts[JobState.ACTIVE] >= 200

    await wait_for(claimed_enough, timeout=60, interval=0.05, what="200 claims")
    f.stop()
    ranks = await claim_ranks(sq, [j.id for j in big + small])
    small_ranks = [ranks[j.id] for j in small if j.id in ranks]
    assert len(small_ranks) == 100, "every small-group job was claimed"
    assert max(small_ranks) <= 110, sorted(small_ranks)[-5:]
    big_early = [j for j in big if ranks.get(j.id, 10**9) <= 110]
    assert len(big_early) == 10  # the big group got its fair share and no more


async def test_late_groups_get_their_share_while_a_backlog_drains(sq: Queue) -> None:
    big = await sq.add_bulk([JobSpec("x", i, JobOptions(group="big")) for i in range(1500)])

    async def handler(ctx, data) -> None:
        return None

    async with running(Worker(sq, {"x": handler}, concurrency=10)) as w:
        await wait_for(lambda: w.stats.processed >= 100, timeout=20, what="big group draining")
        small = await sq.add_bulk([
            JobSpec("x", i, JobOptions(group=f"late-{g}")) for g in range(10) for i in range(10)
        ])
        await wait_for(lambda: _all_done(sq, [j.id for j in small]), timeout=20, what="small groups done")
    ranks = await claim_ranks(sq, [j.id for j in big + small])
    small_ranks = sorted(ranks[j.id] for j in small)
    assert len(small_ranks) == 100
    # From the first small claim on, every round serves each group once: 100 small + at most
    # 10 big (+1 for the round in progress when they arrived) claims.
    assert small_ranks[-1] - small_ranks[0] + 1 <= 111, (small_ranks[0], small_ranks[-1])


async def _all_done(queue: Queue, ids: list[str]) -> bool:
    states = [r["state"] for r in await claim_records(queue, ids)]
    return all(s == "completed" for s in states)


async def test_weights_share_claims_proportionally(sq: Queue) -> None:
    await sq.set_group_weight("heavy", 3)
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="heavy")) for i in range(60)])
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="light")) for i in range(60)])
    claimed = await sq.scripts.claim("w", 10_000, 40)
    ids = [claimed[i] for i in range(1, len(claimed), 6)]
    groups = Counter(r["group"] for r in await claim_records(sq, ids))
    assert groups == {"heavy": 30, "light": 10}


async def test_priorities_order_jobs_within_a_group(sq: Queue) -> None:
    jobs = {}
    for prio in (0, 5, -5, 10, 5):
        job = await sq.add("x", prio, group="g", priority=prio)
        jobs[job.id] = prio
    claimed = await sq.scripts.claim("w", 10_000, 10)
    order = [jobs[claimed[i]] for i in range(1, len(claimed), 6)]
    assert order == [10, 5, 5, 0, -5]


async def test_ungrouped_jobs_share_the_rotation_as_one_group(sq: Queue) -> None:
    await sq.add_bulk([JobSpec("x", i) for i in range(20)])
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="g")) for i in range(20)])
    claimed = await sq.scripts.claim("w", 10_000, 10)
    ids = [claimed[i] for i in range(1, len(claimed), 6)]
    groups = Counter(r["group"] or "-" for r in await claim_records(sq, ids))
    assert groups == {"-": 5, "g": 5}


async def test_admin_operations_see_grouped_jobs(queue: Queue) -> None:
    """Counts, listing, cancel, remove, drain and obliterate (standalone and Cluster)."""
    a = await queue.add("x", 1, group="a")
    b = await queue.add("x", 2, group="a")
    c = await queue.add("x", 3, group="b")
    d = await queue.add("x", 4)
    assert (await queue.counts())[JobState.WAITING] == 4
    page = await queue.list_jobs(JobState.WAITING, limit=10)
    assert [j.id for j in page.jobs] == [d.id, a.id, b.id, c.id]
    assert [j.id for j in (await queue.list_jobs(JobState.WAITING, cursor=2, limit=2)).jobs] == [b.id, c.id]
    assert await queue.cancel(a.id) is JobState.CANCELLED
    await queue.remove(c.id)
    assert (await queue.counts())[JobState.WAITING] == 2
    state = await queue.limits_state()
    assert state["waiting"] == {"ungrouped": 1, "grouped": 1}
    claimed = await queue.scripts.claim("w", 10_000, 10)
    assert sorted(claimed[i] for i in range(1, len(claimed), 6)) == sorted([b.id, d.id])
    await queue.add_bulk([JobSpec("x", i, JobOptions(group=f"g{i % 3}")) for i in range(9)])
    assert await queue.drain() == 9
    assert (await queue.counts())[JobState.WAITING] == 0
    await queue.obliterate(force=True)
    leftover = [k for k in await _keys(queue) if "{" + queue.name + "}" in k]
    assert leftover == []


async def _keys(queue: Queue) -> list[str]:
    from redis.asyncio.cluster import RedisCluster

    client = queue.client
    pattern = f"cv:{{{queue.name}}}:*"
    if isinstance(client, RedisCluster):
        return [k async for k in client.scan_iter(match=pattern, target_nodes=RedisCluster.ALL_NODES)]
    return [k async for k in client.scan_iter(match=pattern)]


async def test_grouped_jobs_run_on_cluster_and_standalone(queue: Queue) -> None:
    await queue.set_group_limits("a", concurrency=1)

    async def handler(ctx, data) -> str:
        return ctx.group or ""

    jobs = await queue.add_bulk([JobSpec("x", i, JobOptions(group="ab"[i % 2])) for i in range(10)])
    async with running(Worker(queue, {"x": handler}, concurrency=4)):
        for job in jobs:
            assert await job.result(timeout=30) in ("a", "b")
    state = await queue.limits_state()
    assert state["groups"]["known"] == 2 and state["waiting"]["grouped"] == 0


async def test_stalled_grouped_job_frees_its_group_slot(sq: Queue) -> None:
    await sq.set_group_limits("g", concurrency=1)
    first = await sq.add("x", 1, group="g")
    second = await sq.add("x", 2, group="g")
    claimed = await sq.scripts.claim("dead-worker", 100, 5)
    assert claimed[1::6] == [first.id]
    assert (await sq.scripts.claim("other", 10_000, 5))[1::6] == []  # capped
    await wait_for(lambda: _lease_expired(sq), timeout=30, what="lease expiry")
    assert await sq.scripts.recover_stalled(max_stalls=5) == (1, 0)
    again = await sq.scripts.claim("other", 10_000, 5)
    assert again[1::6] in ([first.id], [second.id])
    assert int(await sq.client.hget(sq.keys.group("g"), "ga")) == 1


async def _lease_expired(queue: Queue) -> bool:
    t = await queue.client.time()
    now = t[0] * 1000 + t[1] // 1000
    return len(await queue.client.zrangebyscore(queue.keys.active, "-inf", now)) > 0


async def test_a_weight_too_small_to_keep_passes_apart_is_refused(sq: Queue) -> None:
    """A group of weight w advances its pass by 1/w per claim and the virtual time follows it: at a
    weight like 1e-300 the pass of every group that joins later rounds to the same number, and the
    rotation serves the first of them by name for ever. Such weights are refused; at the smallest
    weight allowed, groups served after it still alternate."""
    with pytest.raises(ConfigurationError, match="weight"):
        await sq.set_group_weight("tiny", 1e-300)
    assert await sq.client.hget(sq.keys.group("tiny"), "w") is None
    await sq.set_group_weight("tiny", MIN_WEIGHT)
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="tiny")) for i in range(2)])
    await sq.scripts.claim("w", 10_000, 2)  # the virtual time follows the tiny group's pass
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="b")) for i in range(20)])
    await sq.add_bulk([JobSpec("x", i, JobOptions(group="c")) for i in range(20)])
    claimed = await sq.scripts.claim("w", 10_000, 20)
    ids = [claimed[i] for i in range(1, len(claimed), 6)]
    assert Counter(r["group"] for r in await claim_records(sq, ids)) == {"b": 10, "c": 10}
