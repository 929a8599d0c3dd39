"""A partitioned queue keeps the queue's behaviours, on a standalone server and on a real 3-node
Cluster (where its partitions sit in slots of different shards)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.crc import key_slot

from conveyor import Conveyor, JobContext, JobState, Worker
from conveyor.errors import ConfigurationError, IdempotencyConflictError, InvalidOptionError, QueueNotEmptyError
from conveyor.partitions import PartitionedQueue, route_partition, worker_for
from conveyor.queue import Queue, Retention
from tests.conftest import running, wait_for
from tests.partitions.conftest import PARTS


def groups_in_distinct_partitions(n: int) -> list[str]:
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        found.setdefault(route_partition(f"tenant-{i}", PARTS), f"tenant-{i}")
        i += 1
    return [found[p] for p in sorted(found)]


async def test_partitions_sit_in_distinct_slots_and_plain_jobs_spread(pq: PartitionedQueue) -> None:
    slots = {key_slot(p.keys.ready.encode()) for p in pq.parts}
    assert len(slots) == PARTS
    jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(30)])
    per_part = [(await p.counts())[JobState.WAITING] for p in pq.parts]
    assert per_part == [10, 10, 10]
    assert (await pq.counts())[JobState.WAITING] == 30
    seen: list[int] = []

    async def t(ctx: JobContext, data: int) -> int:
        seen.append(data)
        return data * 2

    async with running(worker_for(pq, {"t": t}, concurrency=4)):  # type: ignore[arg-type]
        records = [await j.wait(timeout=60) for j in jobs]
    assert [r.result for r in records] == [i * 2 for i in range(30)]
    assert all(r.queue == pq.name for r in records)
    assert sorted(seen) == list(range(30))
    assert (await pq.counts())[JobState.COMPLETED] == 30


async def test_generated_ids_name_their_partition(pq: PartitionedQueue) -> None:
    """The per-partition form of the plain queue's increasing ids: a generated id names its
    partition, so finding the job takes one call; ids are unique."""
    jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(PARTS * 4)])
    jobs += [await pq.add("t", i) for i in range(PARTS)]
    assert len({j.id for j in jobs}) == len(jobs)
    for job in jobs:
        index = int(job.id[1:job.id.index(".")])
        assert job.id.startswith("P") and job.queue is pq.parts[index]
        assert await pq.locate(job.id) is pq.parts[index]


async def test_retention_shares_add_up_to_the_limit(pq: PartitionedQueue) -> None:
    await pq.set_retention(Retention(completed_max_count=10, completed_max_bytes=None))
    shares = [int((await Queue._call(p.client.hget(p.keys.meta, "completed_max_count"))) or 0) for p in pq.serving]
    assert sum(shares) == 10 and max(shares) - min(shares) <= 1


async def test_a_tenant_stays_in_one_partition_in_order(pq: PartitionedQueue) -> None:
    a, b = groups_in_distinct_partitions(2)
    jobs = [await pq.add("t", {"g": g, "n": n}, group=g) for n in range(15) for g in (a, b)]
    homes = {g: {(await pq.locate(j.id)) for j in jobs if j.queue is not None and g in (a, b)} for g in (a, b)}
    assert all(len(h) >= 1 for h in homes.values())
    assert {route_partition(a, PARTS), route_partition(b, PARTS)} == {pq.parts.index(j.queue) for j in jobs}
    order: dict[str, list[int]] = {a: [], b: []}

    async def t(ctx: JobContext, data: dict[str, Any]) -> None:
        order[data["g"]].append(data["n"])

    async with running(worker_for(pq, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
        for j in jobs:
            await j.wait(timeout=60)
    assert order[a] == list(range(15)) and order[b] == list(range(15))


async def test_priorities_delays_retries_within_a_partition(pq: PartitionedQueue) -> None:
    (g,) = groups_in_distinct_partitions(1)
    low = await pq.add("t", "low", group=g, priority=-5)
    high = await pq.add("t", "high", group=g, priority=10)
    later = await pq.add("t", "later", delay=3600)
    flaky = await pq.add("flaky", None, attempts=2, backoff=0)
    assert await pq.get_state(later.id) is JobState.DELAYED
    order: list[str] = []

    async def t(ctx: JobContext, data: str) -> None:
        order.append(data)

    async def flaky_fn(ctx: JobContext, data: Any) -> str:
        if ctx.attempt < 2:
            raise RuntimeError("first attempt fails")
        return "second"

    async with running(worker_for(pq, {"t": t, "flaky": flaky_fn}, concurrency=1)):  # type: ignore[arg-type]
        await high.wait(timeout=60)
        await low.wait(timeout=60)
        assert order.index("high") < order.index("low")
        record = await flaky.wait(timeout=60)
        assert record.state is JobState.COMPLETED and record.attempts_made == 2
        assert await pq.get_state(later.id) is JobState.DELAYED
        await pq.promote(later.id)
        assert (await later.wait(timeout=60)).state is JobState.COMPLETED


async def test_idempotency_keys_and_ids_deduplicate_across_partitions(pq: PartitionedQueue) -> None:
    first = await pq.add("t", {"x": 1}, idempotency_key="order-7")
    again = await pq.add("t", {"x": 1}, idempotency_key="order-7")
    assert again.id == first.id and first.created and not again.created
    with pytest.raises(IdempotencyConflictError):
        await pq.add("t", {"x": 2}, idempotency_key="order-7")
    by_id = await pq.add("t", None, job_id="invoice-42")
    assert not (await pq.add("t", None, job_id="invoice-42")).created
    assert (await pq.get_job("invoice-42")) is not None and by_id.id == "invoice-42"
    assert (await pq.counts())[JobState.WAITING] == 2


async def test_keyed_jobs_meet_the_other_jobs_of_their_key(pq: PartitionedQueue) -> None:
    """A keyed job goes to its key's partition, where the jobs of its key are: debounce replaces the
    pending one, throttle returns it. Before, a keyed job without a group was given a round-robin id
    and refused ('a keyed job takes no job_id')."""
    debounced = [await pq.add("t", i, key="essay:7", key_mode="debounce", key_window=3600) for i in range(PARTS + 2)]
    throttled = [await pq.add("t", i, key="doc:9", key_mode="throttle", key_window=3600) for i in range(PARTS + 2)]
    assert len({j.id for j in throttled}) == 1 and throttled[0].created
    assert not any(j.created for j in throttled[1:])
    states = [await pq.get_state(j.id) for j in debounced]
    assert states == [JobState.CANCELLED] * (PARTS + 1) + [JobState.DELAYED]
    counts = await pq.counts()
    assert (counts[JobState.DELAYED], counts[JobState.WAITING]) == (1, 1)


async def test_cancel_waiting_and_active_jobs(pq: PartitionedQueue) -> None:
    waiting = [await pq.add("t", i) for i in range(PARTS)]
    for job in waiting:
        assert await pq.cancel(job.id) is JobState.CANCELLED
    started = asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> None:
        started.set()
        await asyncio.sleep(3600)

    job = await pq.add("slow", None)
    async with running(worker_for(pq, {"slow": slow}, concurrency=2, heartbeat_ms=100)):  # type: ignore[arg-type]
        await asyncio.wait_for(started.wait(), 60)
        assert await pq.cancel(job.id) is JobState.ACTIVE
        assert (await job.wait(timeout=60)).state is JobState.CANCELLED
    assert (await pq.counts())[JobState.CANCELLED] == PARTS + 1


async def test_events_listing_and_counts_cover_every_partition(pq: PartitionedQueue) -> None:
    cursor = await pq.last_event_id()
    jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(12)])

    async def t(ctx: JobContext, data: int) -> int:
        return data

    async with running(worker_for(pq, {"t": t}, concurrency=3)):  # type: ignore[arg-type]
        for j in jobs:
            await j.wait(timeout=60)
    events = await pq.read_events(cursor)
    completed = {e.job_id for e in events if e.type == "completed"}
    assert completed == {j.id for j in jobs}
    assert {e.job_id for e in events if e.type == "added"} == {j.id for j in jobs}
    assert await pq.read_events(events[-1].id) == []  # the composite cursor resumes after the last
    listed: list[str] = []
    page_cursor: int | None = 0
    while page_cursor is not None:
        page = await pq.list_jobs(JobState.COMPLETED, cursor=page_cursor, limit=5)
        listed += [r.id for r in page.jobs]
        page_cursor = page.next_cursor
    assert sorted(listed) == sorted(j.id for j in jobs) and len(listed) == 12
    assert (await pq.counts())[JobState.COMPLETED] == 12


async def test_waiting_jobs_are_listed_past_a_thousand_per_partition(pq: PartitionedQueue) -> None:
    """Listing waiting jobs read at most 1,000 from each partition, so paging through 3,300 waiting
    jobs of 3 partitions ended at 3,000 (`next_cursor` None) and the rest could never be listed."""
    jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(3300)])
    listed: list[str] = []
    page_cursor: int | None = 0
    pages = 0
    while page_cursor is not None:
        page = await pq.list_jobs(JobState.WAITING, cursor=page_cursor, limit=1000)
        listed += [r.id for r in page.jobs]
        page_cursor = page.next_cursor
        pages += 1
        assert pages <= 5
    assert len(listed) == 3300 and set(listed) == {j.id for j in jobs}


async def test_no_partition_starves(pq: PartitionedQueue) -> None:
    """A job in one partition runs while another partition's backlog never drains: each big job
    adds another until the lone job has run, so a worker that let one partition starve the others
    would never run it. Shown by a deadline on the lone job, not by timing or by counting how many
    big jobs ran before it."""
    big, small = groups_in_distinct_partitions(2)
    big_part = pq.parts[route_partition(big, PARTS)]
    await pq.add_bulk([{"name": "t", "data": "big", "options": {"group": big}} for _ in range(200)])
    small_ran = asyncio.Event()
    backlog_then: list[int] = []
    done: list[str] = []

    async def t(ctx: JobContext, data: str) -> None:
        if data == "small":
            backlog_then.append((await big_part.counts())[JobState.WAITING])
            small_ran.set()
        elif not small_ran.is_set():
            await pq.add("t", "big", group=big)  # the backlog stays at 200 until the lone job ran
        done.append(data)

    async def drained() -> bool:
        c = await pq.counts()
        return c[JobState.WAITING] == 0 and c[JobState.ACTIVE] == 0

    async with running(worker_for(pq, {"t": t}, concurrency=2)):  # type: ignore[arg-type]
        await wait_for(lambda: len(done) >= 5, timeout=60, what="the big backlog started")
        lone = await pq.add("t", "small", group=small)
        assert (await lone.wait(timeout=180)).state is JobState.COMPLETED
        assert backlog_then and backlog_then[0] > 0  # it ran while the other partition still had work
        await wait_for(drained, timeout=300, what="everything done")
    assert done.count("small") == 1


async def test_an_idle_worker_wakes_for_any_partition_without_polling(pq: PartitionedQueue) -> None:
    async def t(ctx: JobContext, data: Any) -> None:
        return None

    worker = worker_for(pq, {"t": t}, concurrency=2, idle_block_s=0.5)
    async with running(worker):  # type: ignore[arg-type]
        hub = worker.wake_hub
        await wait_for(lambda: hub.watched == PARTS, timeout=60, what="every partition waiting")
        trips, waits = worker.trips, hub.waits
        await wait_for(lambda: hub.waits >= waits + 3 * PARTS, timeout=60, what="rounds of waits")
        # Idle: at most one probe per partition per wait, never a loop of claims.
        assert worker.trips - trips <= PARTS * (hub.waits - waits + 1)
        for i in range(PARTS):
            job = await pq.parts[i].add("t", None)  # straight into partition i
            assert (await job.wait(timeout=60)).state is JobState.COMPLETED


def test_a_plain_worker_refuses_a_partitioned_queue() -> None:
    q = PartitionedQueue("refused", partitions=2, redis="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError):
        Worker(q, {})


async def test_flow_totals_sum_the_partitions_and_flows_are_refused(pq: PartitionedQueue) -> None:
    totals = await pq.flow_counts()
    assert totals and all(n == 0 for n in totals.values())
    with pytest.raises(ConfigurationError):
        await pq.add_flow(None)


async def test_obliterate_refuses_before_deleting_any_partition_while_one_has_active_jobs(
    pq: PartitionedQueue,
) -> None:
    """Without force, a job active in any partition refuses the whole obliterate before a partition
    is deleted. Before, the partitions before the busy one were deleted (their waiting jobs lost)
    and then the call refused."""
    last = pq.parts[-1]
    busy_id = next(f"busy-{i}" for i in range(1000) if route_partition(f"busy-{i}", PARTS) == PARTS - 1)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> None:
        started.set()
        await release.wait()

    kept = await pq.add_bulk([{"name": "t", "data": i} for i in range(PARTS * 2)])
    busy = await pq.add("slow", None, job_id=busy_id)
    assert busy.queue is last
    only_last = Queue(pq.name, redis=pq.client, partition_tag=last.keys.tag)
    async with running(Worker(only_last, {"slow": slow}, concurrency=1)):
        await asyncio.wait_for(started.wait(), 60)
        with pytest.raises(QueueNotEmptyError):
            await pq.obliterate()
        for job in kept:
            assert await pq.get_state(job.id) is JobState.WAITING
        assert not any([await Queue.is_paused(p) for p in pq.parts])
        release.set()
        assert (await busy.wait(timeout=60)).state is JobState.COMPLETED
    await pq.obliterate()
    assert sum((await pq.counts()).values()) == 0


@pytest.mark.parametrize(("partitions", "previous"), [
    (0, None), (-3, None), (65, None), (10**9, None), (True, None), ("3", None), (2.0, None),
    (3, -1), (3, 65), (3, True), (3, "2"), (3, [2, "x"]),
])
def test_odd_partition_counts_are_refused_where_the_queue_is_declared(partitions: Any, previous: Any) -> None:
    """A partition count that is not an integer in range (a bool included) is refused by
    declare_queue itself and by PartitionedQueue, with the value named. Before, declare_queue took
    any value and the error came at the first app.queue() or worker start, and True was taken as
    one partition."""
    app = Conveyor(redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="must be an integer"):
        app.declare_queue("orders", partitions=partitions, previous_partitions=previous)
    assert "orders" not in app.queue_configs
    with pytest.raises(ConfigurationError, match="must be an integer"):
        PartitionedQueue("orders", partitions=partitions, previous=previous, redis="redis://127.0.0.1:1/0")


@pytest.mark.parametrize("odd", ["two keyed jobs", "a key repeated with other data"])
async def test_a_bulk_refused_on_a_plain_queue_is_refused_whole_before_any_partition_is_written(
    pq: PartitionedQueue, odd: str
) -> None:
    """What a plain queue refuses for the whole batch (keyed jobs in bulk, an id or key repeated with
    other data) is refused before any partition's share is written. Before, the shares of the
    partitions before the offending one were written, then the rest refused (or, with keyed jobs
    in different partitions, the batch went through)."""
    plain = [{"name": "t", "data": i} for i in range(PARTS * 2)]
    if odd == "two keyed jobs":
        # Keys of the partition the round-robin jobs reach last, so the others are written first.
        keys = [k for k in (f"k{i}" for i in range(1000)) if route_partition(k, PARTS) == 0][:2]
        extra = [{"name": "t", "data": k, "options": {"key": k, "key_mode": "latest"}} for k in keys]
        error: type[Exception] = InvalidOptionError
    else:
        extra = [{"name": "t", "data": d, "options": {"idempotency_key": "order-7"}} for d in (1, 2)]
        error = IdempotencyConflictError
    with pytest.raises(error):
        await pq.add_bulk(plain + extra)
    assert sum((await pq.counts()).values()) == 0


async def test_a_handle_by_id_finds_the_job_in_any_partition(pq: PartitionedQueue) -> None:
    """`queue.job(id)` reads, waits on and cancels the job wherever it lives: a keyed job (in its
    key's partition, with a plain generated id) and a job with an id placed by its group. Before,
    the handle was bound to the partition the id alone suggests, so it said the job was not found."""
    group = next(f"tenant-{i}" for i in range(1000)
                 if route_partition(f"tenant-{i}", PARTS) != route_partition("invoice-9", PARTS))
    keyed = await pq.add("t", 1, key="doc:1", key_mode="latest")
    by_group = await pq.add("t", 2, job_id="invoice-9", group=group)
    waiting = await pq.add("t", 3, job_id="invoice-10", group=group)
    assert (await pq.job(waiting.id).record()).state is JobState.WAITING
    assert await pq.job(waiting.id).cancel() is JobState.CANCELLED

    async def t(ctx: JobContext, data: int) -> int:
        return data * 10

    async with running(worker_for(pq, {"t": t}, concurrency=2)):  # type: ignore[arg-type]
        assert await pq.job(keyed.id).result(timeout=60) == 10
        assert await pq.job(by_group.id).result(timeout=60) == 20
