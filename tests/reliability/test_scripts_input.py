"""Bounded batches and checked inputs: every script refuses a bad argument before its first write
(the whole batch, with INVALID_INPUT, nothing written), and lists far over Lua's unpack limit
(about 8,000 values) go through in slices."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.errors import ScriptInputError
from conveyor.redis.codes import ScriptCode
from conveyor.redis.scripts import JobSpecArgs


async def snapshot(queue: Queue) -> dict[str, Any]:
    """Every key of the queue with its serialized value: equal snapshots = nothing written."""
    out = {}
    async for key in queue.client.scan_iter(match=queue.keys.base + "*", count=1000):
        out[key] = await queue.client.dump(key) if await queue.client.type(key) != "stream" else \
            await queue.client.xlen(key)
    return out


def spec(**bad: Any) -> JobSpecArgs:
    fields: dict[str, Any] = {"job_id": "", "idempotency_key": "k", "idempotency_ttl_ms": 60_000, "name": "x",
                              "data": "1", "opts": '{"attempts":2}', "priority": 0, "delay_ms": 0}
    fields.update(bad)
    return JobSpecArgs(**fields)


@pytest.mark.parametrize("poison", [
    {"idempotency_ttl_ms": 0}, {"idempotency_ttl_ms": 10**300}, {"idempotency_ttl_ms": "nan"},
    {"priority": 5000}, {"priority": 1.5}, {"delay_ms": -1}, {"delay_ms": "inf"}, {"cost": -3},
    {"name": ""}, {"job_id": "a b|c"},
])
async def test_add_refuses_a_batch_with_one_poisoned_job(queue: Queue, poison: dict[str, Any]) -> None:
    await queue.add("seed")
    before = await snapshot(queue)
    good = spec(idempotency_key="a")
    bad = spec(idempotency_key="b", **poison)
    with pytest.raises(ScriptInputError) as refused:
        await queue.scripts.add([good, bad])
    assert refused.value.position == 2
    assert await snapshot(queue) == before


def _outcome(job_id: str, token: str, kind: str = "C", number: Any = -1, cost: Any = "") -> list[Any]:
    return [job_id, token, kind, '"r"', number, "", cost]


@pytest.mark.parametrize("poison", [
    {"number": "1e300"}, {"number": "nan"}, {"number": -5}, {"number": 0.5}, {"kind": "Z"},
    {"cost": -1}, {"cost": "1e300"}, {"kind": "R", "number": -1},
])
async def test_finish_refuses_a_trip_with_one_poisoned_outcome(queue: Queue, poison: dict[str, Any]) -> None:
    await queue.add_bulk([{"name": "x", "data": i} for i in range(2)])
    claimed = await queue.scripts.claim("w", 60_000, 2)
    (a, ta), (b, tb) = (claimed[1], claimed[2]), (claimed[7], claimed[8])
    before = await snapshot(queue)
    outcomes = _outcome(a, ta) + _outcome(b, tb, **poison)
    with pytest.raises(ScriptInputError) as refused:
        await queue.scripts.trip("w", 60_000, 1, trip_id="w:1", record_ttl_ms=60_000, outcomes=outcomes, count=2)
    assert refused.value.position == 2
    assert await snapshot(queue) == before
    assert await queue.get_state(a) is JobState.ACTIVE


async def test_every_other_script_checks_its_arguments_first(queue: Queue) -> None:
    await queue.add("x")
    claimed = await queue.scripts.claim("w", 60_000, 1)
    before = await snapshot(queue)
    s = queue.scripts
    refusals = [
        s.trip("w", 0, 1), s.trip("w", 60_000, 5000), s.extend(-1, [(claimed[1], claimed[2])]),
        s.sweep(1, 10, limit=0), s.sweep(-1, 10), s.expire_held(-1), s.obliterate(False, limit=0),
        s.delete_jobs(queue.keys.ready, 0),
    ]
    for call in refusals:
        with pytest.raises(ScriptInputError):
            await call
    for admin in (s.cancel, s.retry, s.promote, s.remove):
        assert (await admin(""))[0] == ScriptCode.INVALID_INPUT
    assert await snapshot(queue) == before


async def test_batches_far_over_the_unpack_limit(queue: Queue) -> None:
    n = 9000  # 18,000 values to ZADD for the heartbeat, 9,000 to ZREM for the finish
    await queue.add_bulk([{"name": "x", "data": i} for i in range(n)])
    leases: list[tuple[str, str]] = []
    while len(leases) < n:
        claimed = await queue.scripts.claim("w", 60_000, 1000)
        leases += [(claimed[i], claimed[i + 1]) for i in range(1, len(claimed), 6)]
    assert set(await queue.scripts.extend(60_000, leases)) == {0}
    outcomes: list[Any] = []
    for job_id, token in leases:
        outcomes += _outcome(job_id, token, number=0)
    reply = await queue.scripts.trip("w", 60_000, 0, outcomes=outcomes, count=n)
    assert set(reply[:n]) == {0}
    counts = await queue.counts()
    assert counts[JobState.ACTIVE] == 0 and counts[JobState.WAITING] == 0
    assert await queue.client.exists(queue.keys.job(leases[0][0])) == 0  # result_ttl 0: deleted
