"""Worker behaviour: ordering, timing, retries and error classes, cancellation, timeouts, results,
on a plain queue and on a partitioned one (tests/conftest.py: `queue`); ordering is shown within one
partition, where it is guaranteed (docs/scaling.md)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from conveyor import (
    BackoffPolicies,
    Exponential,
    Fixed,
    JobCancelledError,
    JobContext,
    JobFailedError,
    JobNotFoundError,
    JobState,
    Queue,
    RateLimited,
    Retry,
    Unrecoverable,
)
from conveyor.partitions import part_holding, worker_for
from tests.conftest import counts_of, one_partition, running, wait_for

pytestmark = pytest.mark.behaviour  # each test runs on a plain and on a partitioned queue


async def test_priority_order(queue: Queue) -> None:
    order: list[int] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        order.append(data)

    await one_partition(queue).add_bulk([{"name": "p", "data": p, "options": {"priority": p}}
                                         for p in (1, 5, -3, 10, 0, 5)])
    async with running(worker_for(queue, {"p": handler}, concurrency=1)):
        await wait_for(lambda: len(order) == 6)
    assert order == [10, 5, 5, 1, 0, -3]


async def test_fifo_within_a_priority(queue: Queue) -> None:
    order: list[int] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        order.append(data)

    await one_partition(queue).add_bulk([{"name": "p", "data": i} for i in range(50)])
    async with running(worker_for(queue, {"p": handler}, concurrency=1)):
        await wait_for(lambda: len(order) == 50)
    assert order == list(range(50))


async def test_result_is_stored_and_returned(queue: Queue) -> None:
    async def double(ctx: JobContext, data: Any) -> dict[str, int]:
        return {"value": data * 2}

    async with running(worker_for(queue, {"double": double})):
        job = await queue.add("double", 21)
        assert await job.result(timeout=30) == {"value": 42}
    rec = await job.record()
    assert rec.state is JobState.COMPLETED and rec.attempts_made == 1
    assert rec.started_ms is not None and rec.finished_ms is not None and rec.finished_ms >= rec.started_ms


async def test_sync_handlers_run_in_threads_with_bounded_concurrency(queue: Queue) -> None:
    import threading

    lock = threading.Lock()
    current = peak = 0
    names: set[str] = set()
    together = threading.Barrier(3)  # each run waits for two others: three threads run at once

    def blocking(ctx: JobContext, data: Any) -> int:
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
            names.add(threading.current_thread().name)
        together.wait(timeout=30)
        with lock:
            current -= 1
        return data

    jobs = await queue.add_bulk([{"name": "b", "data": i} for i in range(12)])
    async with running(worker_for(queue, {"b": blocking}, concurrency=3)):
        results = [await j.result(timeout=30) for j in jobs]
    assert results == list(range(12))
    assert peak == 3
    assert all(n.startswith("conveyor-job") for n in names)


async def test_async_concurrency_is_capped(queue: Queue) -> None:
    current = peak = 0
    done = 0
    full = asyncio.Event()

    async def handler(ctx: JobContext, data: Any) -> None:
        nonlocal current, peak, done
        current += 1
        peak = max(peak, current)
        if current == 7:
            full.set()
        await asyncio.wait_for(full.wait(), 30)  # the cap is reached before anything finishes
        current -= 1
        done += 1

    await queue.add_bulk([{"name": "c", "data": i} for i in range(60)])
    async with running(worker_for(queue, {"c": handler}, concurrency=7)):
        await wait_for(lambda: done == 60)
    assert peak == 7


async def test_delayed_job_runs_when_due_and_never_early(queue: Queue) -> None:
    lateness: list[float] = []

    async def handler(ctx: JobContext, due: float) -> None:
        lateness.append(time.time() - due)

    # An idle worker waits up to 60 s for a wake-up; each job runs long before that, so the worker
    # woke for the delayed job by itself (it sleeps until the next due time, it does not poll).
    async with running(worker_for(queue, {"d": handler}, idle_block_s=60)):
        for _ in range(5):
            delay = 0.3
            await queue.add("d", time.time() + delay, delay=delay)
            expected = len(lateness) + 1
            await wait_for(lambda n=expected: len(lateness) == n, timeout=30)
    assert min(lateness) >= -0.005  # never early (small clock allowance between Redis and us)


async def test_idle_worker_is_woken_by_a_new_job(queue: Queue) -> None:
    ran: list[int] = []

    async def handler(ctx: JobContext, n: int) -> None:
        ran.append(n)

    # The idle wait is 60 s and each job must run within 30 s: only the wake-up list can bring it.
    worker = worker_for(queue, {"l": handler}, idle_block_s=60)
    async with running(worker):
        for n in range(20):
            await wait_for(lambda: worker.active == 0, timeout=30, what="the worker idle")
            await queue.add("l", n)
            await wait_for(lambda n=n: len(ran) == n + 1, timeout=30, what=f"job {n} picked up")
    assert ran == list(range(20))


@pytest.mark.plain_only("per partition: tests/partitions/test_behaviour.py::"
                        "test_an_idle_worker_wakes_for_any_partition_without_polling")
async def test_idle_worker_does_not_poll(queue: Queue, client) -> None:
    async def handler(ctx: JobContext, data: Any) -> None:
        return None

    def calls(info: dict[str, Any], name: str) -> int:
        return sum(int(v["calls"]) for k, v in info.items() if k in {f"cmdstat_{c}" for c in name.split()})

    async def stats() -> tuple[int, int]:
        """(script calls, wake-up waits) so far on the server holding the queue."""
        if hasattr(client, "get_node_from_key"):  # Cluster: ask the node that owns the queue's slot
            await client.ping()
            node = client.get_node_from_key(queue.keys.meta)
            info = await client.info("commandstats", target_nodes=node)
        else:
            info = await client.info("commandstats")
        return calls(info, "evalsha eval"), calls(info, "blpop")

    worker = worker_for(queue, {"x": handler}, idle_block_s=0.5, stalled_interval_ms=60_000)
    async with running(worker):
        await wait_for(lambda: worker.stats.last_heartbeat is not None, timeout=30, what="the worker running")
        scripts_before, waits_before = await stats()

        async def three_waits() -> bool:
            return (await stats())[1] - waits_before >= 3

        await wait_for(three_waits, timeout=60, interval=0.05, what="three wake-up waits")
        scripts_after, waits_after = await stats()
    # Idle, the worker only waits on the wake list: at most one claim after each wait ends (plus one
    # in flight when counting started). A polling worker would make many claims per wait.
    assert scripts_after - scripts_before <= (waits_after - waits_before) + 1, (scripts_after - scripts_before)


async def test_fixed_backoff_schedule(queue: Queue) -> None:
    starts: list[float] = []

    async def flaky(ctx: JobContext, data: Any) -> str:
        starts.append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError("boom")
        return "ok"

    async with running(worker_for(queue, {"f": flaky})):
        job = await queue.add("f", attempts=3, backoff=Fixed(0.2))
        assert await job.result(timeout=30) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert await retry_delays(queue, job.id) == [200, 200]
    assert all(g >= 0.19 for g in gaps), gaps  # never before its backoff


async def test_exponential_backoff_schedule(queue: Queue) -> None:
    starts: list[float] = []

    async def failing(ctx: JobContext, data: Any) -> None:
        starts.append(time.monotonic())
        raise RuntimeError("always")

    async with running(worker_for(queue, {"f": failing})):
        job = await queue.add("f", attempts=4, backoff=Exponential(base=0.1, factor=2, jitter=False))
        with pytest.raises(JobFailedError):
            await job.result(timeout=30)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert await retry_delays(queue, job.id) == [100, 200, 400]
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4), strict=False):
        assert gap >= expected - 0.01, gaps  # never before its backoff


def custom_backoff(attempt: int, error: BaseException | None) -> float:
    return 0.05 * attempt


async def test_named_backoff_policy(queue: Queue) -> None:
    """The job stores only the policy's name; the worker calls the function its registry holds."""
    asked: list[int] = []

    def custom(attempt: int, error: BaseException | None) -> float:
        asked.append(attempt)
        return custom_backoff(attempt, error)

    async def failing(ctx: JobContext, data: Any) -> None:
        if ctx.attempt < 3:
            raise RuntimeError("again")

    policies = BackoffPolicies()
    named = policies.register("custom", custom)
    async with running(worker_for(queue, {"f": failing}, backoffs=policies)):
        job = await queue.add("f", attempts=3, backoff=named)
        await job.result(timeout=30)
    rec = await job.record()
    assert rec.options["backoff"] == {"type": "named", "name": "custom"}
    assert asked == [1, 2] and rec.attempts_made == 3
    assert await retry_delays(queue, job.id) == [50, 100]


async def test_dead_letter_after_last_attempt_and_manual_retry(queue: Queue) -> None:
    fail = True

    async def handler(ctx: JobContext, data: Any) -> str:
        if fail:
            raise ValueError(f"bad attempt {ctx.attempt}")
        return "recovered"

    async with running(worker_for(queue, {"h": handler})):
        job = await queue.add("h", attempts=3, backoff=0)
        with pytest.raises(JobFailedError) as info:
            await job.result(timeout=30)
        rec = await job.record()
        assert rec.state is JobState.FAILED and rec.attempts_made == 3
        assert rec.error is not None and rec.error["type"] == "ValueError"
        assert "bad attempt 3" in rec.error["message"] and "Traceback" in rec.error["stack"]
        assert info.value.error["type"] == "ValueError"
        page = await queue.list_jobs("failed")
        assert [r.id for r in page.jobs] == [job.id]
        fail = False
        await queue.retry(job.id)
        assert await job.result(timeout=30) == "recovered"
    assert (await job.record()).attempts_made == 1


async def test_unrecoverable_fails_at_once(queue: Queue) -> None:
    async def handler(ctx: JobContext, data: Any) -> None:
        raise Unrecoverable("invalid account")

    async with running(worker_for(queue, {"h": handler})):
        job = await queue.add("h", attempts=5)
        with pytest.raises(JobFailedError, match="invalid account"):
            await job.result(timeout=30)
    rec = await job.record()
    assert rec.attempts_made == 1 and rec.state is JobState.FAILED


async def test_retry_signal_uses_an_attempt_and_its_delay(queue: Queue) -> None:
    starts: list[float] = []

    async def handler(ctx: JobContext, data: Any) -> int:
        starts.append(time.monotonic())
        if ctx.attempt == 1:
            raise Retry(after=0.3)
        return ctx.attempt

    async with running(worker_for(queue, {"h": handler})):
        job = await queue.add("h", attempts=2)
        assert await job.result(timeout=30) == 2
    assert await retry_delays(queue, job.id) == [300]
    assert starts[1] - starts[0] >= 0.29  # not before the delay it asked for


async def test_rate_limited_goes_back_without_using_an_attempt(queue: Queue) -> None:
    attempts_seen: list[int] = []
    starts: list[float] = []

    async def handler(ctx: JobContext, data: Any) -> str:
        attempts_seen.append(ctx.attempt)
        starts.append(time.monotonic())
        if len(starts) <= 2:
            raise RateLimited(retry_after=0.2)
        return "sent"

    async with running(worker_for(queue, {"h": handler})):
        job = await queue.add("h")  # a single attempt allowed
        assert await job.result(timeout=30) == "sent"
    assert attempts_seen == [1, 1, 1]
    assert all(b - a >= 0.19 for a, b in itertools.pairwise(starts))
    events = [e.type for e in await queue.read_events("0-0") if e.job_id == job.id]
    assert events.count("retrying") == 2


async def test_timeout_cancels_handler_and_counts_as_failed_attempt(queue: Queue) -> None:
    cancelled = asyncio.Event()

    async def slow(ctx: JobContext, data: Any) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running(worker_for(queue, {"s": slow})):
        job = await queue.add("s", timeout=0.3)
        with pytest.raises(JobFailedError, match="timeout"):
            await job.result(timeout=30)  # the handler alone would run 30 s
    assert cancelled.is_set()
    rec = await job.record()
    assert rec.error is not None and rec.error["type"] == "JobTimeoutError"


async def test_timeout_retries_when_attempts_remain(queue: Queue) -> None:
    async def sometimes_slow(ctx: JobContext, data: Any) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return ctx.attempt

    async with running(worker_for(queue, {"s": sometimes_slow})):
        job = await queue.add("s", timeout=0.2, attempts=2, backoff=0)
        assert await job.result(timeout=30) == 2


async def test_cancel_waiting_and_delayed_jobs(queue: Queue) -> None:
    a = await queue.add("x", 1)
    b = await queue.add("x", 2, delay=60)
    assert await queue.cancel(a.id) is JobState.CANCELLED
    assert await queue.cancel(b.id) is JobState.CANCELLED
    counts = await counts_of(queue)
    assert counts["waiting"] == 0 and counts["delayed"] == 0 and counts["cancelled"] == 2
    with pytest.raises(JobCancelledError):
        await a.result(timeout=1)
    from conveyor import InvalidStateError

    with pytest.raises(InvalidStateError):
        await queue.cancel(a.id)
    with pytest.raises(JobNotFoundError):
        await queue.cancel("no-such-job")


async def test_cancel_active_job_is_cooperative(queue: Queue) -> None:
    started = asyncio.Event()
    saw_cancel = asyncio.Event()

    async def long(ctx: JobContext, data: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    async with running(worker_for(queue, {"l": long}, heartbeat_ms=100)):
        job = await queue.add("l")
        await asyncio.wait_for(started.wait(), 30)
        assert await queue.cancel(job.id) is JobState.ACTIVE  # requested
        with pytest.raises(JobCancelledError):
            await job.result(timeout=30)
    assert saw_cancel.is_set()
    assert (await job.record()).state is JobState.CANCELLED


async def test_handler_may_finish_despite_cancel_request(queue: Queue) -> None:
    started = asyncio.Event()

    async def stubborn(ctx: JobContext, data: Any) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"
        return "never"

    async with running(worker_for(queue, {"s": stubborn}, heartbeat_ms=100)):
        job = await queue.add("s")
        await asyncio.wait_for(started.wait(), 30)
        await queue.cancel(job.id)
        assert await job.result(timeout=30) == "finished anyway"


async def test_sync_handler_checks_cancellation(queue: Queue) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def looping(ctx: JobContext, data: Any) -> str:
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ctx.raise_if_cancelled()
            time.sleep(0.01)
        return "timed out"

    async with running(worker_for(queue, {"s": looping}, heartbeat_ms=100)):
        job = await queue.add("s")
        await asyncio.wait_for(started.wait(), 30)
        await queue.cancel(job.id)
        with pytest.raises(JobCancelledError):
            await job.result(timeout=30)


async def test_progress_logs_and_event_stream(queue: Queue) -> None:
    async def reporting(ctx: JobContext, data: Any) -> str:
        await ctx.progress(50)
        await ctx.log("halfway")
        await ctx.progress({"done": 2, "total": 2})
        return "done"

    cursor = await queue.last_event_id()
    async with running(worker_for(queue, {"r": reporting})):
        job = await queue.add("r")
        await job.result(timeout=30)
    rec = await job.record()
    assert rec.progress == {"done": 2, "total": 2}
    assert await job.logs() == ["halfway"]
    events = [e for e in await queue.read_events(cursor) if e.job_id == job.id]
    assert [e.type for e in events] == ["added", "active", "progress", "log", "progress", "completed"]
    assert events[3].fields["line"] == "halfway"
    # Following from a cursor in the middle returns only what came after it.
    later = [e.type for e in await queue.read_events(events[2].id) if e.job_id == job.id]
    assert later == ["log", "progress", "completed"]


async def test_events_iterator_follows_new_events(queue: Queue) -> None:
    seen: list[str] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        return None

    cursor = await queue.last_event_id()  # taken before the job exists, so no event can be missed

    async def follow_from_cursor() -> None:
        async for event in queue.events(cursor, block_ms=200):
            seen.append(event.type)
            if event.type == "completed":
                return

    follower = asyncio.create_task(follow_from_cursor())
    async with running(worker_for(queue, {"h": handler})):
        await queue.add("h")
        await asyncio.wait_for(follower, 30)
    assert seen[-1] == "completed" and "active" in seen


async def test_unserialisable_result_fails_the_job_clearly(queue: Queue) -> None:
    async def bad(ctx: JobContext, data: Any) -> Any:
        return {"when": object()}

    async with running(worker_for(queue, {"b": bad})):
        job = await queue.add("b", attempts=3)
        with pytest.raises(JobFailedError, match="not JSON-serialisable"):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1


async def test_result_ttl_zero_keeps_no_record(queue: Queue) -> None:
    done = 0

    async def handler(ctx: JobContext, data: Any) -> int:
        nonlocal done
        done += 1
        return 1

    async with running(worker_for(queue, {"h": handler})):
        kept = await queue.add("h", result_ttl=30)
        gone = await queue.add("h", result_ttl=0)
        await wait_for(lambda: done == 2)
        await kept.result(timeout=30)
        await wait_for(lambda: _missing(queue, gone.id))
    home = await part_holding(queue, kept.id)  # a partitioned queue: the job's partition
    ttl = await queue.client.pttl(home.keys.job(kept.id))
    assert 0 < ttl <= 30_000


async def _missing(queue: Queue, job_id: str) -> bool:
    return await queue.get_job(job_id) is None


async def test_paused_queue_delivers_nothing_until_resumed(queue: Queue) -> None:
    seen: list[int] = []

    async def handler(ctx: JobContext, data: Any) -> None:
        seen.append(data)

    await queue.pause()
    assert await queue.is_paused()
    async with running(worker_for(queue, {"h": handler})):
        job = await queue.add("h", 1)
        with pytest.raises(TimeoutError):
            await job.wait(timeout=0.5)
        assert seen == []
        await queue.resume()
        await job.wait(timeout=10)
    assert seen == [1]


async def test_cancel_requested_job_that_fails_is_not_retried(queue: Queue) -> None:
    started = asyncio.Event()

    async def swallow_then_fail(ctx: JobContext, data: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    async with running(worker_for(queue, {"s": swallow_then_fail}, heartbeat_ms=100)):
        job = await queue.add("s", attempts=5, backoff=0)
        await asyncio.wait_for(started.wait(), 30)
        await queue.cancel(job.id)
        with pytest.raises(JobCancelledError):
            await job.result(timeout=30)
    assert (await job.record()).attempts_made == 1


async def retry_delays(queue: Queue, job_id: str) -> list[int]:
    """The delay (ms) of each retry of a job, as the engine recorded it in its events."""
    events = await queue.read_events("0-0", count=10_000)
    return [int(e.fields["delay"]) for e in events if e.job_id == job_id and e.type == "retrying"]
