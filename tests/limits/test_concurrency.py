"""Concurrency caps hold across a fleet: the queue cap and per-group caps (defaults and overrides)."""

from __future__ import annotations

import asyncio

from conveyor import JobOptions, JobSpec, Queue
from conveyor.limits import GroupLimits
from tests.conftest import wait_for
from tests.limits.conftest import seen_max
from tests.limits.fleet_worker import test_key as fleet_key


async def _sample_active(queue: Queue, stop: asyncio.Event, groups: list[str]) -> dict[str, int]:
    """Highest active counts seen in Redis while jobs run: the queue's and each group's."""
    peaks = {"*": 0, **{g: 0 for g in groups}}
    while not stop.is_set():
        peaks["*"] = max(peaks["*"], await queue.client.zcard(queue.keys.active))
        for g in groups:
            ga = await queue.client.hget(queue.keys.group(g), "ga")
            peaks[g] = max(peaks[g], int(ga or 0))
        await asyncio.sleep(0.005)
    return peaks


async def test_queue_cap_holds_across_processes(sq: Queue, fleet) -> None:
    await sq.set_limits(concurrency=4)
    await sq.add_bulk([JobSpec("sleep", {"ms": 60}) for _ in range(40)])
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_active(sq, stop, []))
    f = fleet(sq.name).start(processes=3, concurrency=5)

    async def done() -> bool:
        f.check_alive()
        return (await sq.counts())["completed"] == 40

    await wait_for(done, timeout=40, interval=0.05, what="40 jobs done")
    stop.set()
    peaks = await sampler
    assert peaks["*"] <= 4
    assert await seen_max(sq) <= 4
    assert await seen_max(sq) >= 2  # the fleet did run jobs side by side up to the cap


async def test_group_caps_hold_with_defaults_and_overrides(sq: Queue, fleet) -> None:
    await sq.set_limits(group_defaults=GroupLimits(concurrency=2))
    await sq.set_group_limits("vip", concurrency=3)
    groups = ["a", "b", "vip"]
    # The first vip jobs wait until three of them run at once: only the override (3) allows that.
    await sq.add_bulk([JobSpec("sleep", {"ms": 60, "meet": 3 if g == "vip" and i < 3 else 0}, JobOptions(group=g))
                       for i in range(12) for g in groups])
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_active(sq, stop, groups))
    f = fleet(sq.name).start(processes=3, concurrency=6)

    async def done() -> bool:
        f.check_alive()
        return (await sq.counts())["completed"] == 36

    await wait_for(done, timeout=40, interval=0.05, what="36 grouped jobs done")
    stop.set()
    peaks = await sampler
    assert peaks["a"] <= 2 and peaks["b"] <= 2 and peaks["vip"] <= 3
    assert await seen_max(sq, "a") <= 2
    assert await seen_max(sq, "b") <= 2
    assert await seen_max(sq, "vip") <= 3
    assert await seen_max(sq) <= 7
    assert await seen_max(sq, "vip") == 3  # the override is used, not just the default
    assert await sq.client.llen(fleet_key(sq.name, "met:vip")) == 3  # three vip jobs did run side by side
    state = await sq.limits_state()
    assert state["groups"]["capped"] == 0 and state["waiting"]["grouped"] == 0
    for g in groups:
        assert int(await sq.client.hget(sq.keys.group(g), "ga")) == 0


async def test_queue_and_group_caps_together(sq: Queue, fleet) -> None:
    await sq.set_limits(concurrency=3, group_defaults=GroupLimits(concurrency=1))
    await sq.add_bulk([JobSpec("sleep", {"ms": 40}, JobOptions(group=f"t{i % 5}")) for i in range(30)])
    f = fleet(sq.name).start(processes=2, concurrency=5)

    async def done() -> bool:
        f.check_alive()
        return (await sq.counts())["completed"] == 30

    await wait_for(done, timeout=40, interval=0.05, what="30 jobs done")
    assert await seen_max(sq) <= 3
    for i in range(5):
        assert await seen_max(sq, f"t{i}") == 1
