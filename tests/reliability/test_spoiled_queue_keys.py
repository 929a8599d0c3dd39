"""Queue-level keys edited by hand into another Redis type: an idempotency key (a string) that is
not one names no job and is ridden over; a state set, meta or the events stream of another type
makes a script fail with a Conveyor error naming the key, and the queue can still be obliterated."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from conveyor import Queue, Retention
from conveyor.errors import ConveyorError, SpoiledKeyError
from conveyor.schedules.maintenance import Maintenance


async def _spoil(queue: Queue, key: str) -> None:
    await queue.client.delete(key)
    await queue.client.rpush(key, "not", "the", "right", "type")


async def test_remove_rides_over_a_spoiled_idempotency_key(queue: Queue) -> None:
    """Before, removing a job whose idempotency key had been edited into another type failed with
    redis's raw WRONGTYPE error, every time: the job could not be removed."""
    job = await queue.add("ok", 1, delay=3600, idempotency_key="k1")
    await _spoil(queue, queue.keys.idempotency("k1"))
    await queue.remove(job.id)
    assert not await queue.client.exists(queue.keys.job(job.id), queue.keys.idempotency("k1"))


async def test_an_add_replaces_a_spoiled_idempotency_key(queue: Queue) -> None:
    await _spoil(queue, queue.keys.idempotency("k2"))
    job = await queue.add("ok", 1, delay=3600, idempotency_key="k2")
    assert await queue.client.get(queue.keys.idempotency("k2")) == job.id
    assert (await queue.add("ok", 1, delay=3600, idempotency_key="k2")).id == job.id


async def test_obliterate_rides_over_a_spoiled_idempotency_key(queue: Queue) -> None:
    """Before, obliterating stopped at the job whose idempotency key was spoiled, at every call."""
    jobs = [await queue.add("ok", n, idempotency_key=f"o{n}") for n in range(3)]
    await _spoil(queue, queue.keys.idempotency("o1"))
    await queue.obliterate(force=True)
    assert not await queue.client.exists(*(queue.keys.job(j.id) for j in jobs))
    assert not await queue.client.exists(*(queue.keys.idempotency(f"o{n}") for n in range(3)))


@pytest.fixture
async def apart(queue: Queue) -> AsyncIterator[Queue]:
    """The test's queue under a prefix of its own: a maintenance pass trims every queue of its
    prefix, and must not touch other tests' queues."""
    q = Queue(queue.name, redis=queue.client, prefix=f"t{uuid.uuid4().hex[:12]}")
    yield q
    await q.obliterate(force=True)


async def _finished_past_retention(queue: Queue, n: int, idempotency_key: str | None = None) -> str:
    await queue.set_retention(Retention(completed_max_count=0))
    job = await queue.add("ok", n, idempotency_key=idempotency_key)
    await queue.client.zrem(queue.keys.ready, job.id)  # finished, as a worker would leave it
    await queue.client.hset(queue.keys.job(job.id), mapping={"state": "completed", "finished": "1"})
    await queue.client.zadd(queue.keys.completed, {job.id: 1})
    return job.id


async def test_maintenance_rides_over_a_spoiled_idempotency_key(apart: Queue) -> None:
    """Before, retention's maintenance run failed on a spoiled idempotency key twice over: trimming
    the finished record that pointed at it, and pruning the idempotency keys. Now the record is
    trimmed and the key, which names no job, is deleted."""
    job_id = await _finished_past_retention(apart, 1, "m1")
    await _spoil(apart, apart.keys.idempotency("m1"))
    await _spoil(apart, apart.keys.idempotency("orphan"))
    report = await Maintenance(apart.client, apart.prefix).run()
    assert report.records_deleted.get(apart.name) == 1
    idem = apart.keys.idempotency
    assert not await apart.client.exists(apart.keys.job(job_id), idem("m1"), idem("orphan"))


def _operations(queue: Queue, job_id: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "add": lambda: queue.add("ok", 1),
        "add delayed": lambda: queue.add("ok", 1, delay=60),
        "claim": lambda: queue.scripts.claim("w1", 30_000, 5),
        "sweep": lambda: queue.scripts.sweep(1, 10),
        "cancel": lambda: queue.cancel(job_id),
        "retry": lambda: queue.retry(job_id),
        "promote": lambda: queue.promote(job_id),
        "remove": lambda: queue.remove(job_id),
        "pause": lambda: queue.pause(),
        "resume": lambda: queue.resume(),
        "drain": lambda: queue.drain(),
    }


@pytest.mark.parametrize("name", ["ready", "delayed", "active", "meta", "events"])
async def test_a_spoiled_queue_key_fails_with_an_error_naming_it_and_obliterate_deletes_it(
    queue: Queue, name: str
) -> None:
    """Before, every script meeting one of these keys edited into another type raised redis's raw
    WRONGTYPE error, which names no key, and obliterate did too: the queue could not be deleted."""
    jobs = [await queue.add("ok", n) for n in range(2)] + [await queue.add("ok", 9, delay=3600)]
    key = getattr(queue.keys, name)
    await _spoil(queue, key)
    for what, operation in _operations(queue, jobs[-1].id).items():
        try:
            await operation()
        except SpoiledKeyError as exc:
            assert key in str(exc), (what, str(exc))
        except ConveyorError:
            pass  # (a job state changed by an operation before: e.g. retry of a waiting job)
        await _spoil(queue, key)  # (an operation may have replaced it)
    await queue.obliterate(force=True)
    left = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")]
    # (records the spoiled key indexed are in no set any more: the hand edit lost them, not obliterate)
    assert [k for k in left if not any(part in k for part in (":job:", ":trip:", ":follow"))] == []


@pytest.mark.parametrize("name", ["events", "meta", "completed"])
async def test_maintenance_skips_a_queue_with_a_spoiled_key_and_trims_the_others(
    apart: Queue, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, a queue whose events stream, meta or finished set had been edited into another type
    stopped the whole maintenance pass with redis's raw WRONGTYPE error, at every run: no queue
    after it was trimmed any more. Now that queue is skipped with a warning naming the key."""
    caplog.set_level(logging.WARNING, logger="conveyor.schedules.maintenance")
    other = Queue(apart.name + "-b", redis=apart.client, prefix=apart.prefix)
    try:
        await apart.add("ok", 0)
        kept = await _finished_past_retention(other, 1)
        key = getattr(apart.keys, name)
        await _spoil(apart, key)
        report = await Maintenance(apart.client, apart.prefix).run()
        assert report.skipped == [apart.name]
        assert report.records_deleted.get(other.name) == 1
        assert not await other.client.exists(other.keys.job(kept))
        assert [r for r in caplog.records if key in r.getMessage()]
    finally:
        await other.obliterate(force=True)


def _adds(queue: Queue) -> dict[str, Callable[[], Awaitable[Any]]]:
    return {
        "add": lambda: queue.add("ok", 1),
        "add delayed": lambda: queue.add("ok", 1, delay=60),
        "add with an id": lambda: queue.add("ok", 1, job_id="given-1", idempotency_key="i1"),
        "add_bulk": lambda: queue.add_bulk([{"name": "ok", "data": n} for n in range(3)]),
        "add_bulk delayed": lambda: queue.add_bulk(
            [{"name": "ok", "data": n, "options": {"delay": 60}} for n in range(3)]),
    }


@pytest.mark.parametrize("name", ["ready", "delayed", "events"])
async def test_an_add_meeting_a_spoiled_queue_key_writes_nothing(queue: Queue, name: str) -> None:
    """Before, an add wrote the job's record (and its idempotency key), then failed at the set or
    stream of the wrong type: a job in no set, never run and never listed. Now the add checks the
    queue's keys before its first write and fails naming the key, with nothing written."""
    key = getattr(queue.keys, name)
    await _spoil(queue, key)
    for what, add in _adds(queue).items():
        with pytest.raises(SpoiledKeyError) as caught:
            await add()
        assert key in str(caught.value), (what, str(caught.value))
        left = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")]
        assert [k for k in left if ":job:" in k or ":idem:" in k] == [], what
        assert await queue.client.type(key) == "list", what
    await queue.obliterate(force=True)


async def test_a_keyed_add_meeting_a_spoiled_cancelled_set_writes_nothing(queue: Queue) -> None:
    """Before, a debounced add that replaces a queued job wrote the new job, then failed cancelling
    the old one into a `cancelled` set of the wrong type: two jobs of the key, the new one in no
    set. Now it fails naming the key before writing anything."""
    first = await queue.add("ok", 1, key="doc:1", key_mode="debounce", key_window=3600)
    await _spoil(queue, queue.keys.cancelled)
    with pytest.raises(SpoiledKeyError, match=re.escape(queue.keys.cancelled)):
        await queue.add("ok", 2, key="doc:1", key_mode="debounce", key_window=3600)
    left = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")]
    assert [k for k in left if ":job:" in k] == [queue.keys.job(first.id)]
    assert await queue.client.zrange(queue.keys.delayed, 0, -1) == [first.id]
    await queue.obliterate(force=True)


def _group_keys(queue: Queue) -> dict[str, str]:
    k = queue.keys
    return {"gr": k.group_ready("g2"), "gs": k.group("g2"), "groups": k.groups, "gq": k.group_rotation,
            "gpark": k.groups_parked, "gcap": k.groups_capped, "limits": k.limits}


@pytest.mark.parametrize("name", ["gr", "gs", "groups", "gq", "gpark", "gcap", "limits"])
async def test_a_grouped_add_meeting_a_spoiled_group_key_writes_nothing(queue: Queue, name: str) -> None:
    """Before, a grouped add wrote the job's record, then failed at its group's ready set (or the
    rotation, the groups' set...) of the wrong type: a job in no set, and in a batch the jobs before
    it written. Now the keys of each group a batch joins are checked, once per group, before the
    first write, and the add fails naming the key."""
    key = _group_keys(queue)[name]
    await _spoil(queue, key)
    adds = {
        "add": lambda: queue.add("ok", 1, group="g2"),
        "add_bulk": lambda: queue.add_bulk(
            [{"name": "ok", "data": n, "options": {"group": g}} for n, g in enumerate(["g1", "g1", "g2"])]),
    }
    for what, add in adds.items():
        with pytest.raises(SpoiledKeyError, match=re.escape(key)):
            await add()
        left = [k async for k in queue.client.scan_iter(match=queue.keys.base + "*")]
        assert [k for k in left if ":job:" in k or ":gr:" in k] == ([key] if name == "gr" else []), what
        assert await queue.client.type(key) == "list", what
    await queue.obliterate(force=True)
