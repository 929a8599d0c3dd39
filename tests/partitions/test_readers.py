"""Readers that do not declare a partitioned queue (the CLI, alert rules, maintenance, schedules) find
its layout in Redis and read or act on every partition; events wait on every partition at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobContext, JobState
from conveyor.alerts.probe import Probe
from conveyor.errors import InvalidFlowError
from conveyor.flows import FlowNode
from conveyor.partitions import PartitionedQueue, open_queue, parts_of, read_layouts, worker_for
from conveyor.partitions.queue import MAX_PARTITIONED_LIST_CURSOR
from conveyor.queue import Queue, Retention
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient, connect
from conveyor.redis.keys import AlertKeys, partition_layout_key
from conveyor.schedules.enqueue import QueueCache, enqueue_ticks
from conveyor.schedules.maintenance import Maintenance
from conveyor.schedules.model import Schedule
from tests.cli.run import as_json, conveyor, ok
from tests.conftest import running, wait_for
from tests.partitions.conftest import PARTS


async def _fail_one(pq: PartitionedQueue) -> str:
    """A failed job outside partition 0 (round-robin places the first plain job in partition 1)."""
    async def boom(ctx: JobContext, data: Any) -> None:
        raise ValueError("fails on purpose")

    job = await pq.add("boom", None, attempts=1)
    assert await pq.locate(job.id) is not pq.parts[0]
    async with running(worker_for(pq, {"boom": boom}, concurrency=1)):  # type: ignore[arg-type]
        assert (await job.wait(timeout=60)).state is JobState.FAILED
    return job.id


async def test_the_layout_is_recorded_and_opened_whole(client: RedisClient, qname: str) -> None:
    assert type(await open_queue(qname, redis=client)) is Queue  # never partitioned: a plain queue
    first = PartitionedQueue(qname, partitions=3, redis=client)
    await first.add("t", 1)
    opened = await open_queue(qname, redis=client)
    assert isinstance(opened, PartitionedQueue) and opened.partition_count == 3 and not opened.previous_counts
    moved = PartitionedQueue(qname, partitions=5, previous=3, redis=client)
    await moved.add("t", 2)
    opened = await open_queue(qname, redis=client)
    assert isinstance(opened, PartitionedQueue) and opened.partition_count == 5
    assert opened.previous_counts == (3,)
    assert {p.keys.tag for p in opened.serving} == {p.keys.tag for p in moved.serving}
    assert (await opened.counts())[JobState.WAITING] == 2
    await opened.obliterate(force=True)
    assert type(await open_queue(qname, redis=client)) is Queue  # the record goes with the queue


async def test_members_of_the_record_that_are_not_counts_are_ignored(
    client: RedisClient, qname: str, redis_url: str
) -> None:
    """A record holding members that are not partition counts (bytes that are not UTF-8, words,
    negative or huge numbers) still opens as its valid counts say, for the queue's own readers,
    the maintenance pass and the CLI. Before, a member that was not UTF-8 made every read of the
    record fail to decode the reply (UnicodeDecodeError)."""
    first = PartitionedQueue(qname, partitions=3, redis=client)
    moved = PartitionedQueue(qname, partitions=5, previous=3, redis=client)
    try:
        await first.add("t", 1)
        await moved.add("t", 2)
        await client.zadd(partition_layout_key(qname), {b"\xff\xfe": 1e15, "abc": 1e15, "-2": 1e15, "1000": 1e15,
                                                         "9" * 40: 1e15, "1.5": 1e15})
        for _ in range(2):  # and once more after a declaration recorded over the odd members
            opened = await open_queue(qname, redis=client)
            assert isinstance(opened, PartitionedQueue)
            assert (opened.partition_count, opened.previous_counts) == (5, (3,))
            assert (await opened.counts())[JobState.WAITING] == 2
            assert (await read_layouts(client, "cv", [qname, "other-" + qname])) == {
                qname: (5, (3,)), "other-" + qname: None}
            await PartitionedQueue(qname, partitions=5, previous=3, redis=client).register()
        report = await Maintenance(client).run(await redis_now_ms(client, moved.parts[0].keys.meta))
        assert report.queues >= 1
    finally:
        await moved.obliterate(force=True)


async def test_many_odd_members_above_the_counts_hide_none_of_them(client: RedisClient, qname: str) -> None:
    """More odd members than there can be counts (100, each scored above every count) leave the record
    readable as its counts say, and re-partitioning still records the new layout over them. Before, the
    read and the record took only the 65 highest-scored members: the odd ones hid every count, so the
    queue opened as a plain queue (its partitions unread), the record was overwritten from scratch, and a
    flow (which reads the record's lowest-scored members) put a child on the queue's plain keys."""
    first = PartitionedQueue(qname, partitions=3, redis=client)
    moved = PartitionedQueue(qname, partitions=5, previous=3, redis=client)
    old = PartitionedQueue(qname, partitions=3, redis=client)
    try:
        await first.add("t", 1)
        await client.zadd(partition_layout_key(qname), {f"odd-{i}": 1e15 + i for i in range(100)})
        await client.zadd(partition_layout_key(qname), {f"low-{i}": -1e15 - i for i in range(100)})
        assert (await read_layouts(client, "cv", [qname]))[qname] == (3, ())
        await moved.add("t", 2)  # the re-partition finds the current count 3 among the odd members
        await old.register()  # an old process: the record keeps 5 current
        for _ in range(2):
            opened = await open_queue(qname, redis=client)
            assert isinstance(opened, PartitionedQueue)
            assert (opened.partition_count, opened.previous_counts) == (5, (3,))
            assert (await opened.counts())[JobState.WAITING] == 2
            await client.zadd(partition_layout_key(qname), {str(n): 2e15 + n for n in range(65, 300)})
        plain = Queue(qname + "-plain", redis=client)  # a flow's child there would never run
        with pytest.raises(InvalidFlowError, match="partitioned"):
            await plain.add_flow(FlowNode(plain.name, "total", None, children=[FlowNode(qname, "sq", 3)]))
        assert sum((await plain.counts()).values()) == 0
    finally:
        await moved.obliterate(force=True)


async def test_a_starting_worker_records_the_layout(client: RedisClient, qname: str) -> None:
    q = PartitionedQueue(qname, partitions=4, redis=client)
    try:
        async with running(worker_for(q, {}, concurrency=1)):  # type: ignore[arg-type]
            opened = await open_queue(qname, redis=client)  # before any job was added
            assert isinstance(opened, PartitionedQueue) and opened.partition_count == 4
    finally:
        await q.obliterate(force=True)


async def test_read_events_waits_on_every_partition(backend_url: str, pq: PartitionedQueue) -> None:
    """A blocking read returns with the first partition that has events: it blocks for ten minutes,
    and only an event of the last partition can end it before the test's deadline."""
    blocking = connect(backend_url, socket_timeout=None)  # as for any XREAD BLOCK
    reader = PartitionedQueue(pq.name, partitions=PARTS, redis=blocking)
    try:
        cursor = await reader.last_event_id()
        reading = asyncio.ensure_future(reader.read_events(cursor, block_ms=600_000))
        await asyncio.sleep(0)  # let the blocking reads start (the test holds either way)
        job = await pq.parts[2].add("t", None)  # an event in the last partition only
        events = await asyncio.wait_for(reading, 300)
        assert [(e.type, e.job_id) for e in events][:1] == [("added", job.id)]
        assert await reader.read_events(events[-1].id) == []
    finally:
        await blocking.aclose()


async def test_alert_probe_reads_every_partition(client: RedisClient, pq: PartitionedQueue) -> None:
    failed_id = await _fail_one(pq)
    waiting = await pq.parts[2].add("t", None)
    probe = Probe(client, "cv", await redis_now_ms(client, AlertKeys("cv").state))  # the evaluator's clock
    assert (await probe.counts(pq.name))["failed"] == 1 and (await probe.counts(pq.name))["waiting"] == 1
    assert await probe.finished(pq.name, 3600) == (0, 1)
    assert await probe.oldest_waiting_ms(pq.name) is not None
    assert (await probe.limits(pq.name))["partitions"] == PARTS
    assert failed_id != waiting.id


async def test_maintenance_trims_every_partition(client: RedisClient, pq: PartitionedQueue) -> None:
    await pq.set_retention(Retention(completed_max_age_s=60))
    jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(PARTS * 2)])

    async def t(ctx: JobContext, data: int) -> int:
        return data

    async with running(worker_for(pq, {"t": t}, concurrency=2)):  # type: ignore[arg-type]
        for job in jobs:
            await job.wait(timeout=60)
    assert all([(await Queue.counts(p))[JobState.COMPLETED] == 2 for p in pq.parts])
    an_hour_later = await redis_now_ms(client, pq.parts[0].keys.meta) + 3_600_000
    report = await Maintenance(client).run(an_hour_later)
    assert report.records_deleted.get(pq.name) == PARTS * 2
    assert (await pq.counts())[JobState.COMPLETED] == 0


async def test_schedule_ticks_land_in_one_partition_a_worker_serves(client: RedisClient, pq: PartitionedQueue) -> None:
    await pq.register()
    target = await QueueCache(client, "cv").get(pq.name)
    assert isinstance(target, PartitionedQueue)
    schedule = Schedule(id="every-minute", task="t", queue=pq.name, interval_s=60)
    assert await enqueue_ticks(target, schedule, [1_000, 61_000]) == 2
    assert await enqueue_ticks(target, schedule, [61_000]) == 0  # a tick is enqueued once
    ran: list[Any] = []

    async def t(ctx: JobContext, data: Any) -> None:
        ran.append(ctx.job_id)

    async with running(worker_for(pq, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
        await wait_for(lambda: len(ran) == 2, timeout=60, what="both ticks ran")
    assert len({await pq.locate(i) for i in ran}) == 1


async def test_schedule_ticks_follow_a_repartition_without_a_restart(client: RedisClient, qname: str) -> None:
    """The scheduler's handle of a target queue follows the layout record: after a re-partition its
    ticks go to the new layout, whose workers serve it once the old one is retired. Before, the
    layout was read once, so a scheduler running across the change kept adding ticks to the old
    layout's partition, where they waited for ever once the workers dropped previous_partitions."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    new_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    cache = QueueCache(client, "cv")
    schedule = Schedule(id="every-minute", task="t", queue=qname, interval_s=60)
    try:
        await old_q.register()
        before = await cache.get(qname)
        assert await cache.get(qname) is before  # one handle while the layout stays
        assert await enqueue_ticks(before, schedule, [1_000]) == 1
        await new_q.register()
        after = await cache.get(qname)
        assert isinstance(after, PartitionedQueue)
        assert (after.partition_count, after.previous_counts) == (4, (2,))
        assert await enqueue_ticks(after, schedule, [61_000]) == 1
        home = await new_q.locate(schedule.job_id(61_000))
        assert home is not None and home in new_q.parts
    finally:
        await new_q.obliterate(force=True)


async def test_cli_reads_and_acts_on_every_partition(redis_url: str, qname: str) -> None:
    pq = PartitionedQueue(qname, partitions=PARTS, redis=redis_url)
    try:
        failed_id = await _fail_one(pq)
        jobs = await pq.add_bulk([{"name": "t", "data": i} for i in range(6)])
        row = next(r for r in as_json("queues", redis_url=redis_url)["queues"] if r["name"] == qname)
        assert row["counts"]["waiting"] == 6 and row["counts"]["failed"] == 1
        listed = as_json("jobs", qname, "--state", "waiting", "-n", "100", redis_url=redis_url)
        assert sorted(j["id"] for j in listed["jobs"]) == sorted(j.id for j in jobs)
        homes = [await pq.locate(j.id) for j in jobs]
        far = jobs[homes.index(pq.parts[2])]
        assert as_json("job", qname, far.id, redis_url=redis_url)["state"] == "waiting"
        ok("cancel", qname, far.id, redis_url=redis_url)
        assert await pq.get_state(far.id) is JobState.CANCELLED
        assert as_json("retry", qname, "--all-failed", redis_url=redis_url)["retried"] == 1
        assert await pq.get_state(failed_id) is JobState.WAITING
        ok("pause", qname, redis_url=redis_url)
        assert all([await Queue.is_paused(p) for p in parts_of(pq)])
        ok("resume", qname, redis_url=redis_url)
        added = as_json("enqueue", qname, "t", "--data", "{}", redis_url=redis_url)
        assert await pq.locate(added["id"]) is not None  # placed in the partitions, not beside them
        assert (await pq.counts())[JobState.WAITING] == 7
    finally:
        await pq.obliterate(force=True)
        await pq.close()


async def test_cli_refuses_a_cursor_past_the_partitioned_cap_as_a_bad_argument(redis_url: str, qname: str) -> None:
    """`jobs --cursor N` on a partitioned queue stops at MAX_PARTITIONED_LIST_CURSOR with status 2 and
    one line naming --cursor; before, a cursor up to 10**9 was taken and each partition's first N ids
    were read to build one (empty) page. A plain queue keeps the 10**9 range."""
    pq = PartitionedQueue(qname, partitions=PARTS, redis=redis_url)
    plain = Queue(f"{qname}-plain", redis=redis_url)
    try:
        await pq.add_bulk([{"name": "t", "data": i, "options": {"delay": 3600}} for i in range(6)])
        await plain.add("t", None, delay=3600)
        deep = str(MAX_PARTITIONED_LIST_CURSOR + 1)
        done = conveyor("jobs", qname, "--state", "delayed", "--cursor", deep, redis_url=redis_url)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error: --cursor: cursor must be at most 10000"), lines
        at_cap = as_json("jobs", qname, "--state", "delayed", "--cursor", str(MAX_PARTITIONED_LIST_CURSOR),
                         redis_url=redis_url)
        assert at_cap == {"jobs": [], "next_cursor": None}
        assert len(as_json("jobs", qname, "--state", "delayed", redis_url=redis_url)["jobs"]) == 6
        assert as_json("jobs", plain.name, "--state", "delayed", "--cursor", str(10**9), redis_url=redis_url) == {
            "jobs": [], "next_cursor": None}
    finally:
        await pq.obliterate(force=True)
        await plain.obliterate(force=True)
        await pq.close()
        await plain.close()
