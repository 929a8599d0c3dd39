"""Leases and fencing: expired leases are recovered, late writes are rejected, stalls are bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import ConfigurationError, JobContext, JobFailedError, JobState, LeaseLostError, Queue, Worker
from tests.conftest import running, wait_for

# A worker that never renews its leases and never sweeps: it stands for a process that froze.
FROZEN = {"lease_ms": 200, "heartbeat_ms": 60_000, "stalled_interval_ms": 60_000, "concurrency": 1}


async def lease_lapsed_and_swept(queue: Queue, max_stalls: int = 5) -> bool:
    recovered, dead = await queue.recover_stalled(max_stalls)
    return recovered + dead > 0


async def test_expired_lease_is_recovered_and_late_write_rejected(queue: Queue) -> None:
    release_frozen = asyncio.Event()
    runs: list[str] = []

    async def handler(ctx: JobContext, data: Any) -> str:
        runs.append(ctx.worker_id)
        if ctx.worker_id == "frozen":
            await release_frozen.wait()
            return "from frozen"
        return "from healthy"

    frozen = Worker(queue, {"j": handler}, worker_id="frozen", **FROZEN)
    async with running(frozen, grace_s=1):
        job = await queue.add("j")
        await wait_for(lambda: runs == ["frozen"])
        healthy = Worker(queue, {"j": handler}, worker_id="healthy", lease_ms=5_000, stalled_interval_ms=50)
        async with running(healthy):
            assert await job.result(timeout=30) == "from healthy"
            release_frozen.set()  # the frozen run now finishes and tries to write: rejected
            await wait_for(lambda: frozen.stats.lost >= 1, what="late write rejected")
    rec = await job.record()
    # The frozen worker never confirmed its run by a heartbeat: the expiry is a lapse, not a stall.
    assert rec.state is JobState.COMPLETED and rec.result == "from healthy" and (rec.stalls, rec.lapses) == (0, 1)
    kinds = [e.type for e in await queue.read_events("0-0") if e.job_id == job.id]
    assert kinds.count("completed") == 1 and kinds.count("stalled") == 1


async def test_progress_after_lease_loss_is_rejected(queue: Queue) -> None:
    errors: list[BaseException] = []
    gate = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> None:
        await gate.wait()
        try:
            await ctx.progress(10)
        except LeaseLostError as exc:
            errors.append(exc)
            raise

    w = Worker(queue, {"h": handler}, **FROZEN)
    async with running(w, grace_s=1):
        job = await queue.add("h")
        await wait_for(lambda: w.active == 1)
        await wait_for(lambda: lease_lapsed_and_swept(queue), timeout=30)
        assert await job.state() is JobState.WAITING  # the frozen worker's only slot is busy
        gate.set()
        await wait_for(lambda: len(errors) == 1)
        # The slot is free again, so the worker re-claims the job under a new lease and finishes it.
        await job.result(timeout=30)
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.lapses == 1 and len(errors) == 1


async def _lease_and_expire(queue: Queue, *, confirm: bool, max_stalls: int, max_lapses: int = 10) -> None:
    """Lease the job for 100 ms (a heartbeat confirming the run, or not), then sweep once it expired."""
    claimed = await queue.scripts.claim("w", 100, 1)
    job_id, token = claimed[1], claimed[2]
    if confirm:
        assert await queue.scripts.extend(100, [(job_id, token, True)]) == [0]

    async def swept() -> bool:
        recovered, dead = await queue.recover_stalled(max_stalls, max_lapses)
        return recovered + dead > 0

    await wait_for(swept, what="lease expired and swept")


async def test_job_that_stalls_too_often_fails(queue: Queue) -> None:
    job = await queue.add("h")
    await _lease_and_expire(queue, confirm=True, max_stalls=1)
    assert (await job.record()).state is JobState.WAITING
    await _lease_and_expire(queue, confirm=True, max_stalls=1)
    rec = await job.record()
    assert rec.state is JobState.FAILED and (rec.stalls, rec.lapses) == (2, 0)
    assert rec.error is not None and rec.error["type"] == "Stalled" and "while running" in rec.error["message"]
    with pytest.raises(JobFailedError):
        await job.result(timeout=1)


async def test_lapse_before_a_confirmed_run_is_not_a_stall(queue: Queue) -> None:
    """A lease that expired before any heartbeat confirmed the run (a worker that died at once, a
    trip whose reply was lost) is a lapse: even max_stalls=0 does not fail the job for it."""
    job = await queue.add("h", attempts=5)
    for _ in range(3):
        await _lease_and_expire(queue, confirm=False, max_stalls=0, max_lapses=3)
    rec = await job.record()
    assert rec.state is JobState.WAITING and (rec.stalls, rec.lapses, rec.attempts_made) == (0, 3, 0)
    # ... but a job that takes down every worker at once cannot loop for ever: past max_lapses it fails.
    await _lease_and_expire(queue, confirm=False, max_stalls=0, max_lapses=3)
    rec = await job.record()
    assert rec.state is JobState.FAILED and rec.lapses == 4
    assert rec.error is not None and rec.error["type"] == "Stalled" and "confirmed" in rec.error["message"]


async def test_heartbeat_keeps_long_jobs_leased(queue: Queue) -> None:
    async def longer_than_lease(ctx: JobContext, data: Any) -> str:
        """Runs past its first lease deadline (Redis clock), then checks it is still leased."""

        async def redis_ms() -> int:
            sec, usec = await queue.client.time()
            return int(sec) * 1000 + int(usec) // 1000

        first = float(await queue.client.zscore(queue.keys.active, ctx.job_id))

        async def past_first() -> bool:
            return await redis_ms() > first

        await wait_for(past_first, timeout=60, interval=0.05, what="the first lease deadline passed")
        deadline = await queue.client.zscore(queue.keys.active, ctx.job_id)
        assert deadline is not None and float(deadline) > first  # extended, still ours
        return "ok"

    # A 2 s lease renewed every 100 ms (a busy machine may pause the loop, but not for seconds).
    worker = Worker(queue, {"h": longer_than_lease}, lease_ms=2000, heartbeat_ms=100, stalled_interval_ms=100)
    async with running(worker):
        job = await queue.add("h")
        assert await job.result(timeout=60) == "ok"
    rec = await job.record()
    assert rec.stalls == 0 and rec.attempts_made == 1


async def test_shutdown_hands_unfinished_jobs_back(queue: Queue) -> None:
    started = asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> str:
        started.set()
        await asyncio.sleep(30)
        return "slow"

    w = Worker(queue, {"s": slow})
    await w.start()
    job = await queue.add("s", attempts=1)
    await asyncio.wait_for(started.wait(), 30)
    await w.close(grace_s=0.1)
    rec = await job.record()
    assert rec.state is JobState.WAITING and rec.attempts_made == 0
    assert w.stats.returned == 1

    async def quick(ctx: JobContext, data: Any) -> str:
        return "quick"

    async with running(Worker(queue, {"s": quick})):
        assert await job.result(timeout=30) == "quick"


async def test_worker_warns_when_redis_may_evict_jobs(redis_server, qname: str, caplog) -> None:
    from conveyor.redis.connection import connect

    client = connect(redis_server.url)
    await client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        queue = Queue(qname, redis=client)
        async with running(Worker(queue, {})):
            pass
        assert "maxmemory-policy is 'allkeys-lru'" in caplog.text
    finally:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


async def test_worker_hints_at_compact_job_hashes(redis_server, qname: str, caplog) -> None:
    import logging

    from conveyor.redis.connection import connect

    caplog.set_level(logging.INFO, logger="conveyor.worker.worker")
    client = connect(redis_server.url)
    try:
        await client.config_set("hash-max-listpack-value", "64")
        async with running(Worker(Queue(qname, redis=client), {})):
            pass
        assert "hash-max-listpack-value is 64" in caplog.text
        caplog.clear()
        await client.config_set("hash-max-listpack-value", "1024")
        async with running(Worker(Queue(qname, redis=client), {})):
            pass
        assert "hash-max-listpack-value" not in caplog.text
    finally:
        await client.config_set("hash-max-listpack-value", "64")
        await client.aclose()


@pytest.mark.parametrize("setting", [{"heartbeat_ms": 0}, {"heartbeat_ms": -5}, {"stalled_interval_ms": 0},
                                     {"stalled_interval_ms": -1}])
async def test_a_loop_interval_below_1_ms_is_refused(queue: Queue, setting: dict[str, int]) -> None:
    """Before, a heartbeat or sweep interval of 0 (or below) was taken: that loop slept 0 between
    its calls and spun, the sweep calling Redis without pause and the heartbeat burning the event
    loop. Now the worker refuses it with a clear error, before anything starts."""
    with pytest.raises(ConfigurationError, match=next(iter(setting))):
        Worker(queue, {}, **setting)  # type: ignore[arg-type]


@pytest.mark.parametrize("idle_block_s", [0, -1.0, float("nan")])
async def test_an_idle_wait_that_ends_at_once_is_refused(queue: Queue, idle_block_s: float) -> None:
    """Before, idle_block_s=0 (or below) was taken: an idle worker's wait for a wake-up ended at
    once and it probed the queue with a claim in a loop, without pause. Now the worker refuses
    it with a clear error, before anything starts."""
    with pytest.raises(ConfigurationError, match="idle_block_s"):
        Worker(queue, {}, idle_block_s=idle_block_s)


@pytest.mark.parametrize("lease_ms", [1500.5, 2 * 10**12, 10**15, float("nan"), True])
async def test_a_lease_no_trip_can_carry_is_refused(queue: Queue, lease_ms: float) -> None:
    """finish-10.lua refuses a whole trip whose lease, or trip record (kept two leases), is not a
    whole number of ms within 100 years. Before, such a lease_ms was taken: every trip of the
    worker was refused, and its pump crashed and was restarted for ever without leasing a job.
    Now the worker refuses it with a clear error, before anything starts."""
    with pytest.raises(ConfigurationError, match="lease_ms"):
        Worker(queue, {}, lease_ms=lease_ms)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
async def test_a_batch_that_claims_nothing_is_refused(queue: Queue, batch_size: int) -> None:
    """Before, a batch_size below 1 was taken (0 silently meant the default): with -1 every trip
    asked for no job, so the worker sat idle beside a full queue without a word. Now the worker
    refuses it with a clear error, before anything starts."""
    with pytest.raises(ConfigurationError, match="batch_size"):
        Worker(queue, {}, batch_size=batch_size)
