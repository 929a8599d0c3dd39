"""Enqueue: options, idempotency, bulk atomicity and bad input (nothing half-written), on a plain
queue and on a partitioned one (a bulk add is all or nothing per partition there)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from conveyor import (
    ConnectionFailedError,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidOptionError,
    JobSpec,
    JobState,
    PayloadTooLargeError,
    Queue,
    SerializationError,
)
from conveyor.partitions import PartitionedQueue
from conveyor.testing import free_port
from tests.conftest import counts_of

pytestmark = pytest.mark.behaviour  # tests using `queue` run on a plain and on a partitioned queue


async def test_add_stores_job_with_options(queue: Queue) -> None:
    job = await queue.add("email", {"to": "a@example.com"}, attempts=3, timeout=5, priority=7, backoff=2.0)
    assert job.created
    rec = await job.record()
    assert rec.name == "email"
    assert rec.data == {"to": "a@example.com"}
    assert rec.state is JobState.WAITING
    assert rec.max_attempts == 3
    assert rec.priority == 7
    assert rec.options["timeout"] == 5
    assert rec.options["backoff"] == {"type": "fixed", "delay": 2.0}
    assert rec.created_ms is not None and abs(rec.created_ms - time.time() * 1000) < 60_000
    assert (await counts_of(queue))["waiting"] == 1


@pytest.mark.plain_only("a partitioned queue's ids name their partition: tests/partitions/test_behaviour.py::"
                        "test_generated_ids_name_their_partition")
async def test_generated_ids_are_increasing_numbers(queue: Queue) -> None:
    a = await queue.add("x", 1)
    b = await queue.add("x", 2)
    assert int(b.id) > int(a.id)
    batch = await queue.add_bulk([{"name": "x", "data": i} for i in range(3)])
    first = int(batch[0].id)
    assert first > int(b.id) and [int(j.id) for j in batch] == [first, first + 1, first + 2]


async def test_delay_and_run_at_make_delayed_jobs(queue: Queue) -> None:
    a = await queue.add("x", delay=60)
    b = await queue.add("x", run_at=datetime.now(UTC) + timedelta(minutes=5))
    assert await a.state() is JobState.DELAYED
    assert await b.state() is JobState.DELAYED
    assert (await counts_of(queue))["delayed"] == 2


async def test_idempotency_key_returns_the_first_job(queue: Queue) -> None:
    first = await queue.add("charge", {"amount": 10}, idempotency_key="order-1")
    again = await queue.add("charge", {"amount": 10}, idempotency_key="order-1")
    assert again.id == first.id
    assert first.created and not again.created
    assert (await counts_of(queue))["waiting"] == 1


async def test_idempotency_key_with_other_data_conflicts(queue: Queue) -> None:
    await queue.add("charge", {"amount": 10}, idempotency_key="order-2")
    with pytest.raises(IdempotencyConflictError):
        await queue.add("charge", {"amount": 11}, idempotency_key="order-2")
    assert (await counts_of(queue))["waiting"] == 1


async def test_key_order_in_data_does_not_matter_for_idempotency(queue: Queue) -> None:
    a = await queue.add("x", {"a": 1, "b": 2}, idempotency_key="k")
    b = await queue.add("x", {"b": 2, "a": 1}, idempotency_key="k")
    assert a.id == b.id


async def test_custom_job_id_is_idempotent_and_conflicts_on_other_data(queue: Queue) -> None:
    a = await queue.add("x", {"n": 1}, job_id="report-2026-11")
    b = await queue.add("x", {"n": 1}, job_id="report-2026-11")
    assert a.id == b.id == "report-2026-11" and not b.created
    with pytest.raises(IdempotencyConflictError):
        await queue.add("y", {"n": 1}, job_id="report-2026-11")


async def test_bulk_add_is_all_or_nothing(queue: Queue) -> None:
    await queue.add("x", {"n": 0}, job_id="taken")
    specs: list = [JobSpec("x", {"n": i}) for i in range(10)]
    specs.append({"name": "x", "data": {"n": 99}, "options": {"job_id": "taken"}})
    with pytest.raises(IdempotencyConflictError):
        await queue.add_bulk(specs)
    if isinstance(queue, PartitionedQueue):  # all or nothing per partition (docs/scaling.md)
        home = await queue.locate("taken")
        assert home is not None and (await counts_of(home))["waiting"] == 1
    else:
        assert (await counts_of(queue))["waiting"] == 1


async def test_bulk_add_creates_many(queue: Queue) -> None:
    jobs = await queue.add_bulk([{"name": "x", "data": i, "options": {"priority": i % 3}} for i in range(2500)])
    assert len(jobs) == 2500 and len({j.id for j in jobs}) == 2500
    assert (await counts_of(queue))["waiting"] == 2500


async def test_duplicate_keys_inside_one_bulk_call(queue: Queue) -> None:
    jobs = await queue.add_bulk([
        {"name": "x", "data": 1, "options": {"idempotency_key": "same"}},
        {"name": "x", "data": 1, "options": {"idempotency_key": "same"}},
    ])
    assert jobs[0].id == jobs[1].id
    with pytest.raises(IdempotencyConflictError):
        await queue.add_bulk([
            {"name": "x", "data": 1, "options": {"idempotency_key": "other"}},
            {"name": "x", "data": 2, "options": {"idempotency_key": "other"}},
        ])
    assert (await counts_of(queue))["waiting"] == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -1}, "delay"),
        ({"priority": 5000}, "priority"),
        ({"attempts": 0}, "attempts"),
        ({"timeout": 0}, "timeout"),
        ({"job_id": "123"}, "digits"),
        ({"job_id": "has space"}, "invalid job id"),
        ({"backoff": {"type": "linear"}}, "backoff"),
        ({"run_at": datetime(2030, 1, 1)}, "timezone"),
    ],
)
async def test_bad_options_raise_before_anything_is_written(queue: Queue, options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        await queue.add("x", {"a": 1}, **options)
    assert sum((await counts_of(queue)).values()) == 0


async def test_unknown_option_in_bulk_spec(queue: Queue) -> None:
    with pytest.raises(InvalidOptionError, match="unknown job options"):
        await queue.add_bulk([{"name": "x", "data": 1, "options": {"priorty": 3}}])
    with pytest.raises(TypeError):
        await queue.add("x", 1, priorty=3)  # type: ignore[call-arg]


async def test_unserialisable_data_is_rejected(queue: Queue) -> None:
    with pytest.raises(SerializationError):
        await queue.add("x", {"f": object()})
    with pytest.raises(InvalidJobError):
        await queue.add("", 1)
    assert sum((await counts_of(queue)).values()) == 0


async def test_payload_size_limit(client, qname: str) -> None:
    q = Queue(qname, redis=client, max_payload_bytes=1024)
    with pytest.raises(PayloadTooLargeError):
        await q.add("x", "a" * 2000)
    await q.add("x", "a" * 500)
    assert (await counts_of(q))["waiting"] == 1
    await q.obliterate(force=True)


async def test_default_payload_limit_is_512_kib(queue: Queue) -> None:
    with pytest.raises(PayloadTooLargeError):
        await queue.add("x", "a" * (512 * 1024 + 10))


async def test_unreachable_redis_is_a_clear_error_not_a_hang() -> None:
    q = Queue("nowhere", redis=f"redis://127.0.0.1:{free_port()}/0")
    async with asyncio.timeout(60):  # a generous bound: a hang would never end
        with pytest.raises(ConnectionFailedError):
            await q.add("x", 1)
    await q.close()


async def test_many_concurrent_adds_share_the_pool(redis_url: str, qname: str) -> None:
    import asyncio

    from conveyor.redis.connection import connect

    # The default pool; generous reply and connect timeouts, as 800 adds queue up on a busy machine
    # (the pool opens its 500 connections at once: each one's connect waits for the loop's turn too).
    q = Queue(qname, redis=connect(redis_url, socket_timeout=120, socket_connect_timeout=120))
    jobs = await asyncio.gather(*(q.add("x", i) for i in range(800)))
    assert len({j.id for j in jobs}) == 800
    await q.obliterate()
    await q.close()
