"""Changing the partition count of a live queue loses no job and runs none twice (the procedure of
docs/scaling.md): workers that serve the new and the previous layout first, then producers on the
new count, then, once the old partitions are empty, workers on the new layout alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from conveyor import JobContext, JobState
from conveyor.alerts.probe import Probe
from conveyor.errors import IdempotencyConflictError
from conveyor.limits import admin as limits_admin
from conveyor.limits.model import GroupLimits, RateLimit
from conveyor.partitions import PartitionedQueue, open_queue, route_partition, worker_for
from conveyor.queue import Queue, Retention
from conveyor.redis.connection import RedisClient
from tests.cli.run import as_json
from tests.conftest import running, wait_for


async def trickle(queue: Queue, added: list[int], stop: asyncio.Event) -> None:
    """One job at a time (numbers from 10,000) until `stop`; `added` lists those written."""
    n = 10_000
    while not stop.is_set():
        await queue.add("t", n)
        added.append(n)
        n += 1
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(("before", "after"), [(2, 4), (4, 2), (0, 3)])
async def test_live_repartition(client: RedisClient, qname: str, before: int, after: int) -> None:
    runs: Counter[int] = Counter()
    trickled: list[int] = []
    stop = asyncio.Event()

    async def t(ctx: JobContext, n: int) -> int:
        runs[n] += 1
        await asyncio.sleep(0.001)
        return n

    # 0: a plain queue becomes partitioned (`previous=0` serves its keys).
    old_q: Queue = PartitionedQueue(qname, partitions=before, redis=client) if before else Queue(qname, redis=client)
    both_q = PartitionedQueue(qname, partitions=after, previous=before, redis=client)
    new_q = PartitionedQueue(qname, partitions=after, redis=client)
    try:
        old_worker = worker_for(old_q, {"t": t}, concurrency=3, lease_ms=5000)
        await old_worker.start()
        await old_q.add_bulk([{"name": "t", "data": n, "options": {"group": f"g{n % 7}"}} for n in range(150)])
        await old_q.add_bulk([{"name": "t", "data": n} for n in range(150, 300)])
        await wait_for(lambda: sum(runs.values()) >= 20, timeout=60, what="the old layout running")
        # An old producer keeps adding one job at a time while the workers change.
        trickling = asyncio.ensure_future(trickle(old_q, trickled, stop))
        # 1. Workers serving both layouts join; the old ones leave.
        both_worker = worker_for(both_q, {"t": t}, concurrency=3, lease_ms=5000)
        await both_worker.start()
        await wait_for(lambda: len(trickled) >= 5, timeout=60, what="jobs added during the switch")
        await old_worker.close(10)
        # 2. Producers move to the new count (the old producer may still be adding meanwhile).
        await asyncio.gather(
            both_q.add_bulk([{"name": "t", "data": n} for n in range(300, 450)]),
            old_q.add_bulk([{"name": "t", "data": n, "options": {"group": f"g{n % 7}"}} for n in range(450, 500)]),
        )
        stop.set()
        await trickling
        # 3. Once the partitions only the previous layout has are empty, the new layout alone is enough.
        retired = both_q.serving[len(both_q.parts):]

        async def retired_empty() -> bool:
            for part in retired:
                c = await part.counts()
                if c[JobState.WAITING] or c[JobState.DELAYED] or c[JobState.ACTIVE]:
                    return False
            return True

        await wait_for(retired_empty, timeout=120, what="the retired partitions drained")
        new_worker = worker_for(new_q, {"t": t}, concurrency=3, lease_ms=5000)
        await new_worker.start()
        await both_worker.close(10)
        await new_q.add_bulk([{"name": "t", "data": n} for n in range(500, 550)])
        await wait_for(lambda: len(runs) == 550 + len(trickled), timeout=180, what="every job run")
        await new_worker.close(10)
        # A process that does not declare the queue (the CLI, the API of another app) sees both layouts.
        reader = await open_queue(qname, redis=client)
        assert (await reader.counts())[JobState.COMPLETED] == 550 + len(trickled)
    finally:
        stop.set()
        await both_q.obliterate(force=True)
    assert sorted(runs) == list(range(550)) + trickled
    assert max(runs.values()) == 1, [n for n, c in runs.items() if c > 1]


async def test_previous_layout_jobs_are_found_and_counted(client: RedisClient, qname: str) -> None:
    old_q = PartitionedQueue(qname, partitions=3, redis=client)
    moved = PartitionedQueue(qname, partitions=5, previous=3, redis=client)
    try:
        jobs = await old_q.add_bulk([{"name": "t", "data": n} for n in range(9)])
        assert (await moved.counts())[JobState.WAITING] == 9
        for job in jobs:
            assert (await moved.get_job(job.id)) is not None
        page = await moved.list_jobs(JobState.WAITING, limit=100)
        assert sorted(r.id for r in page.jobs) == sorted(j.id for j in jobs)
        assert await moved.cancel(jobs[0].id) is JobState.CANCELLED

        async def t(ctx: JobContext, data: Any) -> None:
            return None

        async with asyncio.timeout(120):
            worker = worker_for(moved, {"t": t}, concurrency=2)
            await worker.start()
            try:
                for job in jobs[1:]:
                    assert (await job.wait(timeout=60)).state is JobState.COMPLETED
            finally:
                await worker.close(5)
    finally:
        await moved.obliterate(force=True)


async def test_an_old_worker_started_after_a_repartition_leaves_the_current_layout(
    backend_url: str, client: RedisClient, qname: str
) -> None:
    """A rolling deploy starts a worker still declaring the previous count after the new workers
    recorded the new one: the record's current layout stays the new one, so `conveyor enqueue`
    (which reads it) adds to the new partitions, and only a declaration naming the current count as
    previous moves it again. Before, the old worker's start made the old count current again."""
    async def t(ctx: JobContext, data: Any) -> None:
        return None

    first = PartitionedQueue(qname, partitions=2, redis=client)
    new = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    late_old = PartitionedQueue(qname, partitions=2, redis=client)
    try:
        async with running(worker_for(first, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
            pass
        async with (running(worker_for(new, {"t": t}, concurrency=1)),  # type: ignore[arg-type]
                    running(worker_for(late_old, {"t": t}, concurrency=1))):  # type: ignore[arg-type]
            opened = await open_queue(qname, redis=client)
            assert isinstance(opened, PartitionedQueue)
            assert (opened.partition_count, opened.previous_counts) == (4, (2,))
            added = as_json("enqueue", qname, "t", "--data", "{}", "--delay", "3600", redis_url=backend_url)
            home = await new.locate(added["id"])
            assert home is not None and home in new.parts, "enqueued to the superseded layout"
        back = PartitionedQueue(qname, partitions=2, previous=4, redis=client)  # an explicit re-partition
        await back.register()
        opened = await open_queue(qname, redis=client)
        assert isinstance(opened, PartitionedQueue)
        assert (opened.partition_count, opened.previous_counts) == (2, (4,))
        await back.close()
    finally:
        await new.obliterate(force=True)
        for q in (first, new, late_old):
            await q.close()


def moved_keys(name: str, before: int, after: int, n: int) -> list[str]:
    """Keys whose partition tag differs between the two layouts (so a repeat would land elsewhere)."""
    from conveyor.partitions.queue import layout_tags

    def tag(key: str, count: int) -> str:
        tags = layout_tags(name, count)
        return tags[0] if count == 0 else tags[route_partition(key, count)]

    found = [f"order-{i}" for i in range(1000) if tag(f"order-{i}", before) != tag(f"order-{i}", after)]
    return found[:n]


@pytest.mark.parametrize(("before", "after"), [(2, 5), (0, 3)])
async def test_an_idempotency_key_or_id_deduplicates_across_a_repartition(
    client: RedisClient, qname: str, before: int, after: int
) -> None:
    """A request repeated after the producers moved to the new layout returns the job the old
    layout holds (or its conflict) instead of making a second one. Before, the new layout's
    partition did not know the key, so the job was created again and ran twice."""
    old_q: Queue = PartitionedQueue(qname, partitions=before, redis=client) if before else Queue(qname, redis=client)
    new_q = PartitionedQueue(qname, partitions=after, previous=before, redis=client)
    key, job_id, grouped = moved_keys(qname, before, after, 3)
    try:
        first = await old_q.add("t", {"x": 1}, idempotency_key=key)
        by_id = await old_q.add("t", {"x": 2}, job_id=job_id)
        in_group = await old_q.add("t", {"x": 3}, idempotency_key=grouped, group="tenant-1")
        again = await new_q.add("t", {"x": 1}, idempotency_key=key)
        assert (again.id, again.created) == (first.id, False)
        bulk = await new_q.add_bulk([{"name": "t", "data": {"x": 2}, "options": {"job_id": job_id}},
                                     {"name": "t", "data": {"x": 3},
                                      "options": {"idempotency_key": grouped, "group": "tenant-1"}},
                                     {"name": "t", "data": {"x": 4}}])
        assert [(j.id, j.created) for j in bulk[:2]] == [(by_id.id, False), (in_group.id, False)]
        assert bulk[2].created
        with pytest.raises(IdempotencyConflictError):
            await new_q.add("t", {"x": 9}, idempotency_key=key)
        assert (await new_q.counts())[JobState.WAITING] == 4
    finally:
        await new_q.obliterate(force=True)
        await old_q.close()


async def test_obliterate_removes_every_recorded_layout(client: RedisClient, qname: str) -> None:
    """A handle that no longer declares the previous layout (step 4 of the procedure, done early)
    obliterates the partitions of every layout the record names. Before, it deleted only its own
    partitions and the record, so the old layout's job stayed where no reader looked again."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    both_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    new_q = PartitionedQueue(qname, partitions=4, redis=client)
    try:
        left = await old_q.add_bulk([{"name": "t", "data": n} for n in range(4)])
        await both_q.add("t", 9)
        await new_q.obliterate(force=True)
        assert sum((await old_q.counts()).values()) == 0
        for job in left:
            assert await old_q.get_job(job.id) is None
        assert not isinstance(await open_queue(qname, redis=client), PartitionedQueue)
    finally:
        await both_q.obliterate(force=True)


async def test_group_limits_set_during_a_repartition_hold_in_the_previous_layout(
    client: RedisClient, qname: str
) -> None:
    """A tenant's concurrency limit set through a handle serving both layouts reaches the tenant's
    partition of the previous layout too, where its older jobs wait. Before, only the new layout's
    partition got it, so the backlog left in the old one ran without the limit."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    both_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    running_now: list[int] = []
    release = asyncio.Event()

    async def t(ctx: JobContext, data: Any) -> None:
        running_now.append(data)
        await release.wait()

    try:
        group = next(f"tenant-{i}" for i in range(1000) if
                     old_q.parts[route_partition(f"tenant-{i}", 2)].keys.tag
                     != both_q.parts[route_partition(f"tenant-{i}", 4)].keys.tag)
        jobs = await old_q.add_bulk([{"name": "t", "data": n, "options": {"group": group}} for n in range(4)])
        await both_q.set_group_limits(group, concurrency=1)
        home = await both_q.locate(jobs[0].id)
        assert home is not None and home not in both_q.parts
        async with running(worker_for(both_q, {"t": t}, concurrency=4)):  # type: ignore[arg-type]

            async def held_back() -> bool:
                if len(running_now) >= 2:
                    return True
                return bool(running_now) and (await Queue.limits_state(home))["groups"]["capped"] >= 1

            await wait_for(held_back, timeout=60, what="a second job running or the tenant capped")
            assert len(running_now) == 1
            release.set()
            for job in jobs:
                assert (await job.wait(timeout=60)).state is JobState.COMPLETED
    finally:
        release.set()
        await both_q.obliterate(force=True)


async def test_a_keyed_job_meets_its_key_pending_in_the_previous_layout(client: RedisClient, qname: str) -> None:
    """A keyed job added after the producers moved goes where its key's last job still waits, so
    debounce replaces it there and throttle returns it; once that job has ended, the key's jobs go
    to the new layout. Before, the new job went to the new layout beside the pending one, so both
    ran."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    new_q = PartitionedQueue(qname, partitions=5, previous=2, redis=client)
    debounced, throttled = moved_keys(qname, 2, 5, 2)
    try:
        first = await old_q.add("t", 1, key=debounced, key_mode="debounce", key_window=3600)
        second = await new_q.add("t", 2, key=debounced, key_mode="debounce", key_window=3600)
        assert await new_q.get_state(first.id) is JobState.CANCELLED
        assert await new_q.get_state(second.id) is JobState.DELAYED
        assert second.queue.keys.tag == first.queue.keys.tag
        kept = await old_q.add("t", 1, key=throttled, key_mode="throttle", key_window=3600)
        again = await new_q.add("t", 2, key=throttled, key_mode="throttle", key_window=3600)
        assert (again.id, again.created) == (kept.id, False)
        counts = await new_q.counts()
        assert (counts[JobState.DELAYED], counts[JobState.WAITING]) == (1, 1)
        await new_q.cancel(second.id)  # the key's last job ended: its next job goes to the new layout
        third = await new_q.add("t", 3, key=debounced, key_mode="debounce", key_window=3600)
        assert third.queue in new_q.parts and third.queue.keys.tag != first.queue.keys.tag
    finally:
        await new_q.obliterate(force=True)


async def test_limits_set_during_a_repartition_reach_the_previous_layout(client: RedisClient, qname: str) -> None:
    """set_limits through a handle serving both layouts sets the previous layout's partitions too
    (each layout's partitions share the queue-wide limits as that layout would): group defaults set
    during the change hold for the tenants' older jobs waiting there. Before, only the new layout's
    partitions got them, so that backlog ran without the limits."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    both_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    running_now: list[int] = []
    release = asyncio.Event()

    async def t(ctx: JobContext, data: Any) -> None:
        running_now.append(data)
        await release.wait()

    try:
        group = next(f"tenant-{i}" for i in range(1000) if
                     old_q.parts[route_partition(f"tenant-{i}", 2)].keys.tag
                     != both_q.parts[route_partition(f"tenant-{i}", 4)].keys.tag)
        jobs = await old_q.add_bulk([{"name": "t", "data": n, "options": {"group": group}} for n in range(4)])
        await both_q.set_limits(concurrency=8, group_defaults=GroupLimits(concurrency=1))
        home = await both_q.locate(jobs[0].id)
        assert home is not None and home not in both_q.parts
        state = await both_q.limits_state()
        assert state["concurrency"]["limit"] == 8 // 4 * 4 + 8 // 2 * len(both_q.serving[4:])
        async with running(worker_for(both_q, {"t": t}, concurrency=4)):  # type: ignore[arg-type]

            async def held_back() -> bool:
                if len(running_now) >= 2:
                    return True
                return bool(running_now) and (await Queue.limits_state(home))["groups"]["capped"] >= 1

            await wait_for(held_back, timeout=60, what="a second job running or the tenant capped")
            assert len(running_now) == 1
            release.set()
            for job in jobs:
                assert (await job.wait(timeout=60)).state is JobState.COMPLETED
    finally:
        release.set()
        await both_q.obliterate(force=True)


def moved_group(name: str, before: int, after: int) -> str:
    """A group whose partition differs between the two layouts."""
    from conveyor.partitions.queue import layout_tags

    return next(f"tenant-{i}" for i in range(1000)
                if layout_tags(name, before)[route_partition(f"tenant-{i}", before)]
                != layout_tags(name, after)[route_partition(f"tenant-{i}", after)])


async def test_the_alert_probe_reads_a_group_in_every_layout(client: RedisClient, qname: str) -> None:
    """A tenant whose cost budget was spent by its older jobs in the previous layout's partition is
    seen as spent by the alert rules (they read the record, so the new layout is current). Before,
    the probe read the group's partition of the current layout only, whose limiter was untouched."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    both_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    group = moved_group(qname, 2, 4)

    async def t(ctx: JobContext, data: Any) -> None:
        return None

    try:
        await old_q.register()
        await both_q.register()
        await both_q.set_group_limits(group, cost=RateLimit(limit=10, per_s=3600))
        job = await old_q.add("t", 1, group=group, cost=10)
        async with running(worker_for(both_q, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
            assert (await job.wait(timeout=60)).state is JobState.COMPLETED
        await old_q.add("t", 2, group=group, cost=10)  # waits in the old layout: the budget is spent
        probe = Probe(client, "cv")
        limiter = await probe.limiter(qname, group, "cost")
        assert limiter is not None and limiter["tokens"] < 1, limiter
        state = await probe.group_state(qname, group)
        assert state["waiting"] == 1
    finally:
        await both_q.obliterate(force=True)


async def test_retention_is_shared_over_the_current_layout(client: RedisClient, qname: str) -> None:
    """Retention set through a handle that reads every recorded layout (the CLI's, the API's) keeps
    as many finished jobs in the current layout as configured. Before, the count was shared over the
    old, empty layout's partitions too, so the current partitions kept fewer."""
    await PartitionedQueue(qname, partitions=2, redis=client).register()
    new_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    await new_q.register()

    ran: list[int] = []

    async def t(ctx: JobContext, data: int) -> None:
        ran.append(data)

    try:
        reader = await open_queue(qname, redis=client)
        assert isinstance(reader, PartitionedQueue) and len(reader.serving) > len(reader.parts) == 4
        await reader.set_retention(Retention(completed_max_count=8))
        await new_q.add_bulk([{"name": "t", "data": n} for n in range(40)])
        async with running(worker_for(new_q, {"t": t}, concurrency=4)):  # type: ignore[arg-type]
            await wait_for(lambda: len(ran) == 40, timeout=60, what="every job run")
        assert (await reader.counts())[JobState.COMPLETED] == 8
    finally:
        await new_q.obliterate(force=True)


async def test_a_retried_job_of_a_retired_layout_moves_to_the_current_one(
    backend_url: str, client: RedisClient, qname: str
) -> None:
    """After `previous_partitions` was dropped, `retry` and `retry --all-failed` of a job that failed
    in the old layout put it in the current layout, where the workers run it (id, data, group and
    attempts kept). Before, it went back to waiting in the old partition, which no worker serves."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    new_q = PartitionedQueue(qname, partitions=4, redis=client)
    current = {p.keys.tag for p in new_q.parts}
    failing = True

    async def t(ctx: JobContext, data: Any) -> Any:
        if failing:
            raise ValueError("fails on purpose")
        return data

    try:
        jobs = await old_q.add_bulk([{"name": "t", "data": n, "options": {"attempts": 1, "group": f"g{n}"}}
                                     for n in range(8)])
        async with running(worker_for(old_q, {"t": t}, concurrency=2)):  # type: ignore[arg-type]
            for job in jobs:
                assert (await job.wait(timeout=60)).state is JobState.FAILED
        retired = [j.id for j in jobs if j.queue.keys.tag not in current]
        assert len(retired) >= 2
        await PartitionedQueue(qname, partitions=4, previous=2, redis=client).register()  # the re-partition
        await new_q.register()  # then previous_partitions dropped: no process serves the old layout
        reader = await open_queue(qname, redis=client)
        await reader.retry(retired[0])
        one = await new_q.locate(retired[0])
        assert one is not None and one.keys.tag in current, "retried into the retired layout"
        done = as_json("retry", qname, "--all-failed", redis_url=backend_url)
        assert (done["retried"], done["remaining"]) == (7, 0)
        failing = False
        async with running(worker_for(new_q, {"t": t}, concurrency=2)):  # type: ignore[arg-type]
            for n, job in enumerate(jobs):
                record = await new_q.job(job.id).wait(timeout=60)
                assert (record.state, record.result, record.options.get("group")) == (JobState.COMPLETED, n, f"g{n}")
        assert sum((await reader.counts()).values()) == 8
    finally:
        await new_q.obliterate(force=True)


async def test_a_repartition_carries_the_queue_settings_into_the_new_layout(client: RedisClient, qname: str) -> None:
    """The first declaration of a new layout copies the queue's settings into its partitions: a
    paused queue stays paused, the events mode and retention hold, queue-wide limits are re-shared
    so they add up to the same fleet-wide limit, group defaults, a tenant's limits and weight reach
    the tenant's new partition. Settings made once the new layout is current are not overwritten by
    a later declaration. Before, the new partitions started with none of them."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    group = moved_group(qname, 2, 4)
    try:
        await old_q.register()
        await old_q.pause()
        await old_q.set_events_mode("none")
        await old_q.set_retention(Retention(completed_max_count=10, completed_max_age_s=600, failed_max_count=6))
        await old_q.set_limits(concurrency=8, rate=RateLimit(limit=100, per_s=1),
                               group_defaults=GroupLimits(concurrency=3))
        await old_q.set_group_limits(group, concurrency=1)
        await old_q.set_group_weight(group, 2.5)
        both_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
        await both_q.register()
        reader = await open_queue(qname, redis=client)
        assert isinstance(reader, PartitionedQueue) and reader.partition_count == 4
        assert await reader.is_paused()
        assert await reader.events_mode() == "none"
        states = [await Queue.limits_state(part) for part in both_q.parts]
        assert sum(s["concurrency"]["limit"] for s in states) == 8
        assert sum(s["rate"]["limit"] for s in states) == 100
        assert {str(s["group_defaults"]) for s in states} == {str(GroupLimits(concurrency=3).to_json())}
        retention = [await part.client.hmget(part.keys.meta, ["completed_max_count", "completed_max_age_ms",
                                                               "failed_max_count"]) for part in both_q.parts]
        assert sum(int(r[0]) for r in retention) == 10 and sum(int(r[2]) for r in retention) == 6
        assert {r[1] for r in retention} == {"600000"}
        home = both_q.parts[route_partition(group, 4)]
        tenant = await limits_admin.group_state(home, group)
        assert (tenant["concurrency"], tenant["weight"]) == (1, 2.5)
        # Once the layout is current, later settings win over a later declaration of the same change.
        await reader.resume()
        await reader.set_events_mode("all")
        await PartitionedQueue(qname, partitions=4, previous=2, redis=client).register()
        assert not await Queue.is_paused(both_q.parts[0]) and await reader.events_mode() == "all"
    finally:
        await old_q.obliterate(force=True)


async def test_a_plain_queue_partitioned_keeps_its_settings(client: RedisClient, qname: str) -> None:
    """plain → 3 partitions: the plain queue's pause and (whole) limits reach the new partitions."""
    plain = Queue(qname, redis=client)
    try:
        await plain.pause()
        await plain.set_limits(concurrency=6)
        new_q = PartitionedQueue(qname, partitions=3, previous=0, redis=client)
        await new_q.register()
        reader = await open_queue(qname, redis=client)
        assert isinstance(reader, PartitionedQueue) and await reader.is_paused()
        states = [await Queue.limits_state(p) for p in new_q.parts]
        assert sum(s["concurrency"]["limit"] for s in states) == 6
    finally:
        await PartitionedQueue(qname, partitions=3, previous=0, redis=client).obliterate(force=True)


async def test_unreadable_stored_limits_do_not_stop_a_repartition(client: RedisClient, qname: str) -> None:
    """Limits edited by hand into something unreadable are not carried (a warning says so); the
    declaration still succeeds and the other settings still move."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    try:
        await old_q.register()
        await old_q.pause()
        await old_q.set_limits(concurrency=4)
        await client.hset(old_q.parts[0].keys.limits, mapping={"cfg": "{not json", "whole": "[1"})
        await PartitionedQueue(qname, partitions=3, previous=2, redis=client).register()
        reader = await open_queue(qname, redis=client)
        assert isinstance(reader, PartitionedQueue) and reader.partition_count == 3
        assert await reader.is_paused()
    finally:
        await old_q.obliterate(force=True)


async def test_a_moved_job_takes_its_log_with_it(client: RedisClient, qname: str) -> None:
    """A failed job of a previous layout that a retry moves to the current layout keeps the lines its
    handler logged (in order, the new run's after them), as a retried job of a plain queue does. Before,
    the lines were deleted with the old record, so the job's log started again empty."""
    old_q = PartitionedQueue(qname, partitions=2, redis=client)
    new_q = PartitionedQueue(qname, partitions=4, previous=2, redis=client)
    failing = True

    async def t(ctx: JobContext, data: Any) -> Any:
        await ctx.log(f"run {'one' if failing else 'two'}")
        await ctx.log("é" * 100)
        if failing:
            raise ValueError("fails on purpose")
        return data

    try:
        job = await old_q.add("t", 1, attempts=1, failed_ttl=3600)
        async with running(worker_for(old_q, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
            assert (await job.wait(timeout=60)).state is JobState.FAILED
        await new_q.register()
        assert await new_q.retry(job.id) is JobState.WAITING
        part = await new_q.locate(job.id)
        assert part is not None and part.keys.tag in {p.keys.tag for p in new_q.parts}
        assert await new_q.get_logs(job.id) == ["run one", "é" * 100]
        assert await client.ttl(part.keys.log(job.id)) == -1  # no longer the failed record's expiry
        failing = False
        async with running(worker_for(new_q, {"t": t}, concurrency=1)):  # type: ignore[arg-type]
            assert (await new_q.job(job.id).wait(timeout=60)).state is JobState.COMPLETED
        assert await new_q.get_logs(job.id) == ["run one", "é" * 100, "run two", "é" * 100]
    finally:
        await new_q.obliterate(force=True)
