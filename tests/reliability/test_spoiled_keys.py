"""A job record edited by hand into another Redis type (a string, a list) where the hot path's scripts
expect a hash: it is no job, and it must neither lose the jobs beside it nor stand the worker or the
queue still."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobContext, JobFailedError, JobNotFoundError, JobState, Queue, Retention, Retry, Worker
from conveyor.redis.scripts import CLAIM_FIELDS, CLAIM_HEADER
from tests.conftest import running, wait_for
from tests.reliability.helpers import FAST, loops_alive


async def _ok(ctx: JobContext, data: Any) -> Any:
    return data


async def _spoil(queue: Queue, job_id: str) -> None:
    """Replace the job's record (a hash) with a string."""
    await queue.client.delete(queue.keys.job(job_id))
    await queue.client.set(queue.keys.job(job_id), "not a hash")


async def test_a_spoiled_ready_record_loses_none_of_the_jobs_claimed_with_it(queue: Queue) -> None:
    """Before, the claim popped a batch of ids from `ready` and failed at the spoiled record's read:
    the jobs popped with it were in no set any more (lost), one of them marked active under a lease
    no sweep could see, and the worker's pump crashed on the error. Now the spoiled id is dropped,
    as a missing record's is, and the others run."""
    await queue.pause()
    jobs = [await queue.add("ok", n) for n in range(5)]
    await _spoil(queue, jobs[2].id)
    await queue.resume()
    worker = Worker(queue, {"ok": _ok}, concurrency=10, batch_size=10, **FAST)
    async with running(worker):
        for job in jobs[:2] + jobs[3:]:
            assert await job.result(timeout=30) == (await job.record()).data
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_a_spoiled_due_record_never_stops_the_claims_of_the_queue(queue: Queue) -> None:
    """Before, a claim that promoted due delayed jobs failed at the spoiled record, whole, and the
    next one did again (the id stayed due): no worker of the queue leased anything any more, and
    each worker's pump crashed on every trip. Now its id only leaves `delayed`."""
    jobs = [await queue.add("ok", n, delay=0.2) for n in range(5)]
    await _spoil(queue, jobs[2].id)
    worker = Worker(queue, {"ok": _ok}, concurrency=10, batch_size=10, **FAST)
    async with running(worker):
        for job in jobs[:2] + jobs[3:]:
            assert await job.result(timeout=30) == (await job.record()).data
        assert await queue.client.zscore(queue.keys.delayed, jobs[2].id) is None
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_a_spoiled_held_record_never_stops_the_claims_of_the_queue(queue: Queue) -> None:
    """Before, a claim that took held jobs back to ready (a worker with their handler came) failed
    at the spoiled record, whole, every time: that worker leased nothing and its pump crashed on
    every trip. Now its id only leaves the hold."""
    holder = Worker(queue, {"other": _ok}, **FAST)
    async with running(holder):
        jobs = [await queue.add("ok", n) for n in range(3)]
        await wait_for(lambda: holder.stats.held == 3, what="every job held")
    await _spoil(queue, jobs[1].id)
    worker = Worker(queue, {"ok": _ok}, **FAST)
    async with running(worker):
        for job in (jobs[0], jobs[2]):
            assert await job.result(timeout=30) == (await job.record()).data
        assert loops_alive(worker)
    assert worker.loop_restarts == 0
    assert await queue.held() == {}


async def test_the_outcome_of_a_spoiled_record_never_stands_the_worker_still(queue: Queue) -> None:
    """Before, a trip carrying the outcome of a job whose record had been edited into another type
    under its run failed whole at that record's read; the pump crashed, sent the same outcomes
    again after its restart and failed again, for ever: the worker recorded nothing and leased
    nothing more. Now that outcome answers as a missing record's (NOT_FOUND) and the id leaves
    `active`."""
    gate = asyncio.Event()
    started: list[str] = []

    async def slow(ctx: JobContext, data: Any) -> Any:
        started.append(ctx.job_id)
        await gate.wait()
        return data

    worker = Worker(queue, {"slow": slow, "ok": _ok}, concurrency=4, **FAST)
    async with running(worker):
        victim = await queue.add("slow", 1)
        await wait_for(lambda: started, what="the job started")
        await queue.client.delete(queue.keys.job(victim.id))
        await queue.client.rpush(queue.keys.job(victim.id), "not a hash")
        gate.set()
        await wait_for(lambda: not worker.leases, what="the outcome answered")
        after = await queue.add("ok", 2)
        assert await after.result(timeout=30) == 2
        assert await queue.client.zscore(queue.keys.active, victim.id) is None
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_a_trip_sent_again_reads_past_a_spoiled_record_it_leased(queue: Queue) -> None:
    """A trip whose reply was lost is sent again and answered from its record, which re-reads the
    jobs it leased. Before, one of them edited into another type meanwhile made that answer fail
    (the pump crashed); now the answer leaves it out, as it leaves out a job no longer leased."""
    jobs = [await queue.add("ok", n) for n in range(2)]
    first = await queue.scripts.trip("w1", 30_000, 2, trip_id="w1:1", record_ttl_ms=60_000)
    await _spoil(queue, jobs[0].id)
    again = await queue.scripts.trip("w1", 30_000, 2, trip_id="w1:1", record_ttl_ms=60_000)
    assert first[CLAIM_HEADER::CLAIM_FIELDS] == [jobs[0].id, jobs[1].id]
    assert again[CLAIM_HEADER:] == first[CLAIM_HEADER + CLAIM_FIELDS:]
    await queue.client.delete(queue.keys.job(jobs[0].id))


async def test_a_spoiled_held_record_never_stops_the_sweep(queue: Queue) -> None:
    """Before, failing the jobs held past the no-handler timeout stopped at the spoiled record with
    an error that ended the worker's sweep loop, again at each of its restarts. Now its id only
    leaves the hold and the others fail with NoHandler."""
    holder = Worker(queue, {"other": _ok}, **FAST)
    async with running(holder):
        jobs = [await queue.add("ok", n) for n in range(2)]
        await wait_for(lambda: holder.stats.held == 2, what="every job held")
    await _spoil(queue, jobs[0].id)
    worker = Worker(queue, {"other": _ok}, no_handler_timeout_s=0.2, **FAST)
    async with running(worker):
        with pytest.raises(JobFailedError):
            await jobs[1].result(timeout=30)
        assert (await jobs[1].record()).error["type"] == "NoHandler"
        assert await queue.held() == {}
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


async def test_the_sweep_lets_go_of_a_spoiled_active_record(queue: Queue) -> None:
    """Before, the sweep took an expired lease whose record was not a hash for one out of reach while
    the queue's slot migrates and kept its id in `active` a minute longer, every minute, for ever.
    Now such an id leaves `active` at once, counted as an orphan."""
    job = await queue.add("ok", 1)
    await queue.client.zrem(queue.keys.ready, job.id)
    await _spoil(queue, job.id)
    await queue.client.zadd(queue.keys.active, {job.id: 1})
    sweep = await queue.scripts.sweep(1, 10)
    assert sweep.orphans == 1
    assert await queue.client.zscore(queue.keys.active, job.id) is None
    await queue.client.delete(queue.keys.job(job.id))


async def test_the_heartbeat_stops_the_run_of_a_spoiled_record(queue: Queue) -> None:
    """Before, the heartbeat took a running job's record edited into another type for one out of
    reach while the queue's slot migrates: it renewed the lease at every beat and the run went on
    for ever, holding its slot, though no outcome of it could be recorded. Now the heartbeat says
    the job is gone and the worker stops the run as it stops one whose lease was lost."""
    started: list[str] = []

    async def forever(ctx: JobContext, data: Any) -> Any:
        started.append(ctx.job_id)
        await asyncio.Event().wait()

    worker = Worker(queue, {"forever": forever}, concurrency=1, **FAST)
    async with running(worker):
        victim = await queue.add("forever", 1)
        await wait_for(lambda: started, what="the job started")
        await _spoil(queue, victim.id)
        await wait_for(lambda: not worker.leases and worker.active == 0, what="the run stopped")
        assert worker.stats.lost == 1
        assert loops_alive(worker)
    await queue.client.delete(queue.keys.job(victim.id))


async def test_a_spoiled_finished_record_never_stops_the_completions(queue: Queue) -> None:
    """A trip that records a completion trims the completed set (retention). Before, an old
    completed record edited into another type made that trim fail after the trip's outcomes were
    written; the pump sent the trip again and the trim failed again, for ever: the worker recorded
    and leased nothing more. Now the trim deletes that record's key like any other."""
    await queue.set_retention(Retention(completed_max_count=1))
    worker = Worker(queue, {"ok": _ok}, concurrency=1, **FAST)
    async with running(worker):
        old = await queue.add("ok", 0)
        assert await old.result(timeout=30) == 0
        await _spoil(queue, old.id)
        for n in range(1, 4):  # one at a time: each completion trims the one before
            assert await (await queue.add("ok", n)).result(timeout=30) == n
        assert loops_alive(worker)
    assert worker.loop_restarts == 0
    assert not await queue.client.exists(queue.keys.job(old.id))


async def test_obliterate_deletes_a_spoiled_record(queue: Queue) -> None:
    """Before, obliterating a queue stopped with an error at a job record edited into another type,
    at every call: the queue could not be deleted. Now that key goes with the rest."""
    jobs = [await queue.add("ok", n) for n in range(3)]
    await _spoil(queue, jobs[1].id)
    await queue.obliterate(force=True)
    assert not await queue.client.exists(*(queue.keys.job(job.id) for job in jobs))


async def test_a_spoiled_wake_list_is_replaced(queue: Queue) -> None:
    """The wake list holds only markers. Before, that key edited by hand into another type failed
    every script that wakes idle workers: every add was refused with a raw WRONGTYPE error and
    every trip that sent a job back to the queue failed after part of its writes. Now such a key
    is replaced by a fresh marker."""
    async def flaky(ctx: JobContext, data: Any) -> Any:
        if ctx.attempt == 1:  # the trip recording this retry meets a spoiled wake list
            await queue.client.delete(queue.keys.wake)
            await queue.client.set(queue.keys.wake, "x")
            raise Retry(after=0)
        return data

    await queue.add("ok", 0)  # the queue's keys exist
    for kind in ("hash", "string"):
        await queue.client.delete(queue.keys.wake)
        if kind == "hash":
            await queue.client.hset(queue.keys.wake, "x", "1")
        else:
            await queue.client.set(queue.keys.wake, "x")
        jobs = [await queue.add("ok", 1), await queue.add("ok", 2, delay=0.2),
                await queue.add("flaky", 3, attempts=2)]
        worker = Worker(queue, {"ok": _ok, "flaky": flaky}, **FAST)
        async with running(worker):
            for job in jobs:
                assert await job.result(timeout=30) == (await job.record()).data
            assert loops_alive(worker)
        assert worker.loop_restarts == 0


@pytest.mark.parametrize("grouped", [False, True])
async def test_a_spoiled_record_never_stops_the_claims_of_a_limited_queue(queue: Queue, grouped: bool) -> None:
    """A queue with limits claims through the limiter, which reads each job's record before taking
    it. Before, a record edited into another type failed that claim whole, every time (the id
    stayed first in line): no worker of the queue leased anything any more. Now the id is dropped
    as a stale entry and the others run."""
    await queue.set_limits(concurrency=5)
    await queue.pause()
    group = {"group": "g"} if grouped else {}
    jobs = [await queue.add("ok", n, **group) for n in range(4)]  # type: ignore[arg-type]
    await _spoil(queue, jobs[0].id)
    await queue.resume()
    worker = Worker(queue, {"ok": _ok}, **FAST)
    async with running(worker):
        for job in jobs[1:]:
            assert await job.result(timeout=30) == (await job.record()).data
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


@pytest.mark.parametrize("spoiled", ["hold", "holds"])
async def test_a_spoiled_hold_index_never_loses_a_held_job(queue: Queue, spoiled: str) -> None:
    """A job no worker has a handler for here waits in the queue's hold index (<p>hold:<name>, its
    names in <p>holds). Before, either key edited into another type made the trip holding the job
    fail after marking it held (the job was in no set: lost) and the pump crash, and every sweep
    fail once jobs were held. Now such a key, which lists no job, is replaced, and the job waits
    there for a worker with its handler."""
    await queue.add("ok", 0)  # the queue's keys exist
    key = queue.keys.hold("ok") if spoiled == "hold" else queue.keys.holds
    await queue.client.set(key, "not an index")
    holder = Worker(queue, {"other": _ok}, **FAST)
    async with running(holder):
        job = await queue.add("ok", 1)
        await wait_for(lambda: holder.stats.held >= 2, what="the jobs held")
        assert loops_alive(holder)
    assert holder.loop_restarts == 0
    async with running(Worker(queue, {"ok": _ok}, **FAST)) as worker:
        assert await job.result(timeout=30) == 1
        assert loops_alive(worker)
    assert worker.loop_restarts == 0


@pytest.mark.parametrize("action", ["cancel", "retry", "remove", "promote"])
async def test_an_admin_action_on_a_spoiled_record_answers_job_not_found(queue: Queue, action: str) -> None:
    """Before, cancelling, retrying, removing or promoting a job whose record was edited into
    another type raised redis's raw WRONGTYPE error to the caller (a 500 from the HTTP API, a
    traceback from the CLI). Now it answers as for a job that does not exist, and writes nothing."""
    job = await queue.add("ok", 1, delay=3600)
    await queue.client.zrem(queue.keys.delayed, job.id)
    await _spoil(queue, job.id)
    before = await queue.client.xlen(queue.keys.events)
    with pytest.raises(JobNotFoundError):
        await getattr(queue, action)(job.id)
    assert await queue.client.get(queue.keys.job(job.id)) == "not a hash"
    assert await queue.client.xlen(queue.keys.events) == before
    for state_set in (queue.keys.ready, queue.keys.delayed, queue.keys.cancelled):
        assert await queue.client.zscore(state_set, job.id) is None
    await queue.client.delete(queue.keys.job(job.id))


async def test_a_due_id_without_a_record_only_leaves_delayed(queue: Queue) -> None:
    """Before, promoting a due delayed id whose record was gone (deleted by hand, expired) wrote a
    stray {state: waiting} record for it and queued the id; now the id only leaves `delayed`, and
    the jobs due with it are claimed."""
    gone = await queue.add("ok", 0, delay=3600)
    kept = await queue.add("ok", 1, delay=3600)
    await queue.client.delete(queue.keys.job(gone.id))
    await queue.client.zadd(queue.keys.delayed, {gone.id: 1, kept.id: 2})  # both due now
    claimed = await queue.scripts.claim("w1", 30_000, 10)
    assert claimed[1::6] == [kept.id]
    assert not await queue.client.exists(queue.keys.job(gone.id))
    assert await queue.client.zscore(queue.keys.delayed, gone.id) is None
    assert await queue.client.zscore(queue.keys.ready, gone.id) is None


@pytest.mark.parametrize("how", ["drain", "purge"])
async def test_drain_and_purge_delete_a_spoiled_record(queue: Queue, how: str) -> None:
    """Before, draining or purging a set that listed a record edited into another type failed at
    that record, at every call: the set could not be emptied. Now its key goes with the rest."""
    jobs = [await queue.add("ok", n) for n in range(3)]
    if how == "purge":
        for job in jobs:
            await queue.client.zrem(queue.keys.ready, job.id)
            await queue.client.hset(queue.keys.job(job.id), "state", "failed")
            await queue.client.zadd(queue.keys.failed, {job.id: 1})
    await _spoil(queue, jobs[1].id)
    deleted = await (queue.drain() if how == "drain" else queue.purge("failed"))
    assert deleted == 3
    assert not await queue.client.exists(*(queue.keys.job(job.id) for job in jobs))


@pytest.mark.parametrize("how", ["add", "add_bulk", "idempotency_key"])
async def test_an_add_with_the_id_of_a_spoiled_record_replaces_it(queue: Queue, how: str) -> None:
    """Before, an add whose given id (or whose idempotency key's job) had a record of another type
    failed whole with an error naming no key, and so did every later add of that id or key, until the
    record was deleted by hand. Now the record is no job, as everywhere else: the add writes the job
    in its place (or under a new id), and the batch's other jobs with it."""
    if how == "idempotency_key":
        first = await queue.add("ok", 1, idempotency_key="same")
        await _spoil(queue, first.id)
        job = await queue.add("ok", 1, idempotency_key="same")
        assert job.id != first.id
        assert await queue.client.get(queue.keys.idempotency("same")) == job.id
        assert await queue.client.type(queue.keys.job(first.id)) == "string"  # (no job: left as it is)
        jobs = [job]
    else:
        await queue.client.set(queue.keys.job("given"), "not a hash")
        await queue.client.rpush(queue.keys.log("given"), "a line of the job that went")
        if how == "add":
            jobs = [await queue.add("ok", 1, job_id="given")]
        else:
            jobs = await queue.add_bulk([{"name": "ok", "data": 0}, {"name": "ok", "data": 1,
                                                                     "options": {"job_id": "given"}}])
        assert jobs[-1].id == "given"
        assert await queue.client.exists(queue.keys.log("given")) == 0
    for job in jobs:
        assert await queue.client.zscore(queue.keys.ready, job.id) is not None
    worker = Worker(queue, {"ok": _ok}, **FAST)
    async with running(worker):
        for job in jobs:
            assert await job.result(timeout=30) == (await job.record()).data


@pytest.mark.parametrize("spoiled", ["last job", "key"])
async def test_a_keyed_add_rides_over_a_spoiled_record_of_its_key(queue: Queue, spoiled: str) -> None:
    """Before, a keyed add read the key's last job record (and the key's own hash) with plain calls:
    either one edited into another type failed every add of that key, for good. Now the record is no
    job (the key's last job is gone) and the key's hash, which names no job, is replaced."""
    first = await queue.add("ok", 1, key="doc:1", key_mode="debounce", key_window=3600)
    if spoiled == "last job":
        await _spoil(queue, first.id)
    else:
        await queue.client.delete(queue.keys.job_key("doc:1"))
        await queue.client.set(queue.keys.job_key("doc:1"), "not a hash")
    second = await queue.add("ok", 2, key="doc:1", key_mode="debounce", key_window=3600)
    assert second.id != first.id
    assert await queue.client.hget(queue.keys.job_key("doc:1"), "job") == second.id
    assert await queue.client.zscore(queue.keys.delayed, second.id) is not None
    third = await queue.add("ok", 3, key="doc:1", key_mode="debounce", key_window=3600)
    assert await queue.get_state(second.id) is JobState.CANCELLED
    assert await queue.client.zscore(queue.keys.delayed, third.id) is not None


async def test_a_parked_claim_rides_over_a_spoiled_wake_list(plain_client: Any, qname: str) -> None:
    """An idle worker parks its claim behind a BLPOP on the wake list; that list edited into another
    type made the BLPOP fail at once, and the pump crashed on the error (a restart and an error log
    each time it met one; the worker-level test above caught it only now and then). Now the parked
    trip's reply is used and the spoiled list replaced, without a spin of trips."""
    queue = Queue(qname, redis=plain_client)
    await queue.add("ok", 0)  # the queue's keys exist
    await queue.drain()
    await plain_client.delete(queue.keys.wake)
    await plain_client.set(queue.keys.wake, "x")
    worker = Worker(queue, {"ok": _ok}, **FAST)
    assert worker.parks
    async with running(worker):
        await wait_for(lambda: worker.trips >= 2, what="the worker parked its claim")
        job = await queue.add("ok", 7)
        assert await job.result(timeout=30) == 7
        assert loops_alive(worker)
        assert worker.trips < 50  # parked, not spinning on an error that returns at once
    assert worker.loop_restarts == 0
    assert await plain_client.type(queue.keys.wake) in ("list", "none")


async def test_the_wake_hub_rides_over_a_spoiled_wake_list(
    plain_client: Any, qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The process's wake hub waits with one BLPOP on the wake lists of many queues: one of them
    edited into another type failed that BLPOP at once, every time, so no queue of the group was
    woken by its markers any more (their jobs waited for the safety-net probe). Now the spoiled list
    is replaced and the wait goes on."""
    queue = Queue(qname, redis=plain_client)
    await queue.add("ok", 0)
    await queue.drain()
    await plain_client.delete(queue.keys.wake)
    await plain_client.set(queue.keys.wake, "x")
    worker = Worker(queue, {"ok": _ok}, park_idle=False, **FAST)
    async with running(worker):

        async def replaced() -> bool:
            return await plain_client.type(queue.keys.wake) in ("list", "none")

        await wait_for(replaced, what="the spoiled wake list replaced by the hub")
        job = await queue.add("ok", 8)
        assert await job.result(timeout=30) == 8
    assert "wake-up wait failed" not in caplog.text
    assert worker.loop_restarts == 0
