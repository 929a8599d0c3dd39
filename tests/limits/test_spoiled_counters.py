"""Limiter and concurrency-cap counters edited by hand (a value that is not an integer) never stand
a queue or a limiter still: the scripts that add to them start them again, as the core scripts do
for `meta` counters, and the state readers read them as 0."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobSpec, Queue, Worker
from conveyor.limits import Limiter, SharedLimiter
from tests.conftest import running


async def test_a_spoiled_cap_share_count_never_stops_the_queue(sq: Queue) -> None:
    """Before, the fleet-wide cap's per-worker count (`cwa`) was added to with a plain HINCRBY: edited
    to a non-integer, every claim and every finish of that worker failed, so the queue stood still
    with its jobs leased. Now the count starts again."""
    await sq.set_limits(concurrency=2)

    async def ok(ctx: Any, data: Any) -> Any:
        return data

    worker = Worker(sq, {"ok": ok}, concurrency=4)
    async with running(worker):
        first = await sq.add("ok", 0)
        assert await first.result(timeout=30) == 0
        fields = await sq.client.hkeys(sq.keys.cap_holders)
        await sq.client.hset(sq.keys.cap_holders, mapping={f: "garbage" for f in [*fields, worker.worker_id]})
        jobs = await sq.add_bulk([JobSpec("ok", i) for i in range(1, 9)])
        for i, job in enumerate(jobs, 1):
            assert await job.result(timeout=30) == i
        assert all(not task.done() for task in worker.loop_tasks.values()), "the pump lives"


@pytest.mark.parametrize("field", ["n_ok", "used_in", "n_429"])
async def test_a_spoiled_limiter_total_never_stops_the_limiter(sq: Queue, field: str) -> None:
    """Before, limiter-settle-5 added to the limiter's totals with a plain HINCRBY: one edited to a
    non-integer made every release fail, so the slots were never given back and the limiter
    admitted nothing more; its state could not be read either. Now the total starts again and the
    state reads a spoiled total as 0."""
    name = "spoiled:" + sq.name
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, concurrency=1))
    try:
        assert (await lim.acquire("r1", 1, 5, 5, 10_000)).granted == 1
        await lim.confirm("r1", ["tok-1"], 10_000)
        await sq.client.hset(lim.keys.all[1], field, "garbage")
        minute = int((await sq.client.time())[0]) // 60
        await sq.client.hset(lim.keys.all[4], mapping={f"{m}:{s}": "garbage" for m in (minute, minute + 1)
                                                    for s in ("r", "i", "o", "x")})
        await lim.state()  # readable while spoiled
        assert await lim.release([("tok-1", 5, 0, "429" if field == "n_429" else "ok", 0)], 10_000) == [0]
        state = await lim.state()
        assert state["concurrency"]["held"] == 0
        assert (await lim.acquire("r2", 1, 5, 5, 10_000)).granted == 1, "the slot came back"
    finally:
        await sq.client.delete(*lim.keys.all)



async def test_an_unreadable_limiter_entry_never_stops_the_limiter(sq: Queue) -> None:
    """Before, a reservation or hold entry edited to something that is not one made the sweep that
    every acquire runs fail on it (arithmetic on nil), so the limiter admitted nothing, for good,
    and a release naming it failed. Now it is dropped when it expires."""
    name = "unreadable:" + sq.name
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, concurrency=2))
    exp, info = lim.keys.all[2], lim.keys.all[3]
    try:
        await sq.client.hset(info, mapping={"bad-1": "garbage", "bad-2": "P|x|1|1|1"})
        await sq.client.zadd(exp, {"bad-1": 0, "bad-2": 0})  # expired: the next sweep meets them
        assert (await lim.acquire("r1", 1, 5, 5, 10_000)).granted == 1
        assert await sq.client.hlen(info) == 1, "the unreadable entries were swept"
        await sq.client.hset(info, "bad-3", "garbage")
        assert await lim.release([("bad-3", 1, 1, "ok", 0)], 10_000) == [-1]
        assert (await lim.acquire("r1", 1, 5, 5, 10_000)).granted == 1  # a resend: the same grant
        assert (await lim.state())["concurrency"]["held"] == 1
    finally:
        await sq.client.delete(*lim.keys.all)


@pytest.mark.parametrize("how", ["expires", "released", "confirmed"])
async def test_the_slot_of_an_unreadable_limiter_entry_comes_back(sq: Queue, how: str) -> None:
    """Before, a hold or reservation entry edited to something unreadable was dropped giving nothing
    back: the slot it held stayed counted in `held` for good, so a limiter of one slot admitted
    nothing more. Now dropping it (when it expires, or when its holder releases or confirms it)
    counts the held slots again from the readable entries."""
    name = "leak:" + sq.name
    lim = SharedLimiter(sq.client, name)
    await lim.declare(Limiter(name, concurrency=1))
    exp, info = lim.keys.all[2], lim.keys.all[3]
    try:
        assert (await lim.acquire("r1", 1, 5, 5, 10_000)).granted == 1
        spoiled = "r1"
        if how != "confirmed":
            await lim.confirm("r1", ["tok-1"], 10_000)
            spoiled = "tok-1"
        await sq.client.hset(info, spoiled, "garbage")
        assert (await lim.acquire("r2", 1, 5, 5, 10_000)).granted == 0, "the slot is still held"
        if how == "expires":
            await sq.client.zadd(exp, {spoiled: 0})  # its holder died: the next sweep meets it
        elif how == "released":
            assert await lim.release([(spoiled, 5, 5, "ok", 0)], 10_000) == [-1]
        else:
            assert await lim.confirm("r1", ["tok-1"], 10_000) == [-1]
        assert (await lim.acquire("r3", 1, 5, 5, 10_000)).granted == 1, "the slot came back"
        assert await sq.client.hexists(info, spoiled) == 0
        assert (await lim.state())["concurrency"]["held"] == 1
        assert (await lim.acquire("r4", 1, 5, 5, 10_000)).granted == 0, "never handed out twice"
    finally:
        await sq.client.delete(*lim.keys.all)
