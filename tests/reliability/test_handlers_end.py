"""Handlers that end: a stray CancelledError is a failed attempt that frees its slot, close() never
hangs, a sync handler's timeout counts from when its code starts, a timed-out or lease-lost sync
handler is interrupted in its thread and keeps its slot until the thread returns, and a closing worker
does not spin its heartbeat (the lease-extend storm)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest
import redis as syncredis

from conveyor import JobContext, JobFailedError, JobInterrupted, JobState, Queue, SerializationError, Worker
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.conftest import running, wait_for


async def test_a_stray_cancelled_error_is_a_failed_attempt_and_frees_the_slot(queue: Queue) -> None:
    async def awaits_a_cancelled_future(ctx: JobContext, data: Any) -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        loop.call_soon(future.cancel)  # someone else cancels what the handler waits for
        await future

    async def ok(ctx: JobContext, data: Any) -> str:
        return "ok"

    worker = Worker(queue, {"stray": awaits_a_cancelled_future, "ok": ok}, concurrency=1)
    async with running(worker):
        stray = await queue.add("stray", attempts=1)
        after = await queue.add("ok")
        try:
            await stray.result(timeout=15)
        except JobFailedError as exc:
            assert exc.error["type"] == "StrayCancelledError"
        assert await after.result(timeout=15) == "ok", "the slot was freed"
        assert worker.active == 0
    assert not worker.running, "close() returned"


async def test_close_never_hangs_on_a_handler_that_ignores_cancellation(queue: Queue) -> None:
    started, released = asyncio.Event(), asyncio.Event()

    async def stubborn(ctx: JobContext, data: Any) -> None:
        started.set()
        while not released.is_set():
            try:
                await released.wait()
            except asyncio.CancelledError:
                continue

    worker = Worker(queue, {"s": stubborn})
    await worker.start()
    job = await queue.add("s")
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.wait_for(worker.close(grace_s=0.1), 60)
    rec = await job.record()
    assert rec.state is JobState.WAITING and rec.attempts_made == 0, "handed back explicitly"
    assert await queue.client.zcard(queue.keys.active) == 0
    released.set()  # the handler may end now (its late end changes nothing)


async def test_sync_timeout_counts_from_the_start_and_the_slot_waits_for_the_thread(queue: Queue) -> None:
    order: list[str] = []
    lock = threading.Lock()

    def note(what: str) -> None:
        with lock:
            order.append(what)

    def slow(ctx: JobContext, data: Any) -> None:
        note("slow started")
        try:
            while True:
                time.sleep(0.005)
        except JobInterrupted:
            note("slow interrupted")
            # Cleanup that takes a while: its slot stays taken until the thread returns.
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                time.sleep(0.005)
            note("slow returned")
            raise

    def quick(ctx: JobContext, data: Any) -> str:
        note("quick started")
        return "quick"

    async with running(Worker(queue, {"slow": slow, "quick": quick}, concurrency=1)):
        timed_out = await queue.add("slow", timeout=0.2)
        # A 10 ms job whose own timeout would have run out while it waited behind the slow one.
        after = await queue.add("quick", timeout=0.2)
        try:
            await timed_out.result(timeout=20)
        except JobFailedError as exc:
            assert exc.error["type"] == "JobTimeoutError"
        assert await after.result(timeout=20) == "quick"
    assert order == ["slow started", "slow interrupted", "slow returned", "quick started"]


async def test_a_sync_handler_whose_lease_is_lost_is_interrupted(queue: Queue) -> None:
    started, returned = threading.Event(), threading.Event()

    def loops(ctx: JobContext, data: Any) -> None:
        started.set()
        try:
            while True:
                time.sleep(0.005)
        finally:
            returned.set()

    worker = Worker(queue, {"l": loops}, heartbeat_ms=50)
    async with running(worker):
        job = await queue.add("l")
        await wait_for(started.is_set, what="running")
        # Another worker took the job over (its lease expired and was granted again).
        await queue.client.hset(queue.keys.job(job.id), "token", "taken-over")
        await wait_for(returned.is_set, what="the thread was interrupted and returned")
        await wait_for(lambda: worker.active == 0, what="the slot is free")
    assert worker.stats.lost == 1
    assert await job.state() is JobState.ACTIVE, "nothing was written under the lost lease"


async def test_a_closing_worker_does_not_spin_its_heartbeat(qname: str) -> None:
    """The lease-extend storm: after close(), a heartbeat that returned at once from its sleep
    extended leases in a tight loop (thousands of calls a second) while jobs were still running."""
    with RedisServer() as server, syncredis.Redis(port=server.port) as admin:
        queue = Queue(qname, redis=connect(server.url))
        gate = asyncio.Event()

        async def waits(ctx: JobContext, data: Any) -> None:
            await gate.wait()

        # Heartbeat and sweep every minute: during the window below neither is due.
        worker = Worker(queue, {"w": waits}, heartbeat_ms=60_000, stalled_interval_ms=60_000)
        await worker.start()
        await queue.add("w")
        await wait_for(lambda: worker.active == 1, what="running")
        closing = asyncio.create_task(worker.close(grace_s=60))
        # Closing ends the idle slots' parked claim first (its one script call); then nothing runs.
        await wait_for(lambda: worker.pump.parked is None, what="the parked claim ended")
        before = _script_calls(admin)
        for _ in range(50):  # fifty round trips to Redis: a spinning loop would run all along
            await queue.client.ping()
        assert _script_calls(admin) == before, "no script call while the closing worker waits for its job"
        gate.set()
        await asyncio.wait_for(closing, 60)
        await queue.client.aclose()


def _script_calls(admin: syncredis.Redis) -> int:
    stats = admin.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


class _Custom(BaseException):
    """A BaseException of the handler's own (not an Exception)."""


_BASE_EXCEPTIONS: dict[str, type[BaseException]] = {
    "exit": SystemExit, "interrupt": KeyboardInterrupt, "generator": GeneratorExit, "custom": _Custom,
}


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_handler_raising_a_base_exception_fails_its_job_and_the_worker_goes_on(
    queue: Queue, sync: bool
) -> None:
    """SystemExit, KeyboardInterrupt, GeneratorExit or a custom BaseException raised by a handler
    (async or sync) is its job's failure. Before, SystemExit and KeyboardInterrupt ended the worker's
    event loop (the process) with the job left active, and the others handed the job back without
    using an attempt, so it ran again at once, for ever."""
    runs: dict[str, int] = {name: 0 for name in _BASE_EXCEPTIONS}

    def raise_it(data: Any) -> None:
        runs[data] += 1
        raise _BASE_EXCEPTIONS[data]("from the handler")

    async def async_raises(ctx: JobContext, data: Any) -> None:
        raise_it(data)

    def sync_raises(ctx: JobContext, data: Any) -> None:
        raise_it(data)

    async def ok(ctx: JobContext, data: Any) -> str:
        return "ok"

    worker = Worker(queue, {"raises": sync_raises if sync else async_raises, "ok": ok}, concurrency=2)
    async with running(worker):
        jobs = {name: await queue.add("raises", name, attempts=1) for name in _BASE_EXCEPTIONS}
        for name, job in jobs.items():
            with pytest.raises(JobFailedError) as failed:
                await job.result(timeout=30)
            assert failed.value.error["type"] == _BASE_EXCEPTIONS[name].__name__
        after = await queue.add("ok")
        assert await after.result(timeout=30) == "ok", "the worker goes on"
        assert all(not task.done() for task in worker.loop_tasks.values())
    assert runs == {name: 1 for name in _BASE_EXCEPTIONS}, "each ran once"
    assert worker.stats.failed == len(_BASE_EXCEPTIONS)


async def test_an_async_handler_blocking_the_event_loop_past_half_a_lease_is_named_in_a_warning(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """An `async def` handler that blocks (time.sleep) stops the heartbeat: its lease lapses and the
    job runs again elsewhere. Before, the worker said only that outcomes were refused as lost; now
    the heartbeat, waking late, says the event loop was blocked and which async jobs were running."""

    async def blocks(ctx: JobContext, data: Any) -> str:
        time.sleep(1.5)  # noqa: ASYNC251 - the fault under test: blocking inside async def (lease: 1 s)
        return "done"

    worker = Worker(queue, {"blocks": blocks}, lease_ms=1000)
    caplog.set_level("WARNING", logger="conveyor.worker.keeper")
    async with running(worker):
        job = await queue.add("blocks")
        await wait_for(lambda: worker.keeper.blocked >= 1, what="the late heartbeat noticed the blocked loop")
    warnings = [r.getMessage() for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert warnings and f"blocks ({job.id})" in warnings[0], warnings


async def test_a_huge_progress_value_is_refused_before_it_reaches_redis(queue: Queue) -> None:
    """Before, a progress value had no size limit: a handler reporting megabytes wrote them to the
    job and to every event the stream kept (thousands of entries). Now a value over 64 KiB as JSON
    raises SerializationError in the handler and nothing is written; small values still go through."""
    refused: list[str] = []

    async def reports(ctx: JobContext, data: Any) -> str:
        try:
            await ctx.progress({"blob": "x" * (2 * 1024 * 1024)})
        except SerializationError as exc:
            refused.append(str(exc))
        await ctx.progress({"done": 1})
        return "ok"

    async with running(Worker(queue, {"r": reports})):
        job = await queue.add("r")
        assert await job.result(timeout=30) == "ok"
    assert len(refused) == 1 and "over the limit" in refused[0]
    assert (await job.record()).progress == {"done": 1}
    stored = await queue.client.xrange(queue.keys.events)
    assert stored, "events were kept"
    assert max(len(str(fields)) for _, fields in stored) < 64 * 1024, "no huge event"


async def test_a_handler_that_does_not_stop_past_its_timeout_is_named_in_a_warning(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that catches the CancelledError (async) or JobInterrupted (sync) its timeout raises
    and goes on keeps its slot and its lease until it returns. Before, nothing said so; now the
    heartbeat warns once per run that is still going a few seconds after its timeout ran out."""
    released = threading.Event()

    async def async_stubborn(ctx: JobContext, data: Any) -> str:
        while not released.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue
        return "async"

    def sync_stubborn(ctx: JobContext, data: Any) -> str:
        while not released.is_set():
            try:
                time.sleep(0.01)
            except JobInterrupted:
                continue
        return "sync"

    worker = Worker(queue, {"a": async_stubborn, "s": sync_stubborn}, heartbeat_ms=100)
    caplog.set_level("WARNING", logger="conveyor.worker.keeper")
    async with running(worker):
        jobs = [await queue.add("a", timeout=0.2), await queue.add("s", timeout=0.2)]
        try:
            await wait_for(lambda: worker.keeper.overdue >= 2, timeout=60, what="both runs were found overdue")
        finally:
            released.set()
        warnings = [r.getMessage() for r in caplog.records if "is still running although" in r.getMessage()]
        assert len(warnings) == 2 and all("timeout" in w for w in warnings), warnings
        assert {job.id for job in jobs} == {w.split()[3] for w in warnings}
        for job in jobs:
            with contextlib.suppress(JobFailedError):
                await job.result(timeout=30)
    assert worker.keeper.overdue == 2, "once per run"
