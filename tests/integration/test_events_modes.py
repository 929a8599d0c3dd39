"""Events modes (docs/events.md): `all` writes every event; `followed` writes the per-job lifecycle
events only while a reader follows the queue; `none` never writes them. Rare events are always
written, and Job.wait/result and testing.drain stay correct in every mode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from conveyor import JobContext, JobState, Queue, Unrecoverable
from conveyor.errors import InvalidOptionError
from conveyor.events import HOT_EVENTS, EventsMode
from conveyor.partitions import parts_of, worker_for
from tests.conftest import running, wait_for

pytestmark = pytest.mark.behaviour  # each test runs on a plain and on a partitioned queue


async def stream(queue: Queue) -> list[tuple[str, str]]:
    """(type, job id) of every event in the stream (of each partition, in turn: a job's events are
    all in its partition), read without following the queue."""
    entries = [e for part in parts_of(queue) for e in await queue.client.xrange(part.keys.events, count=100_000)]
    return [(f.get("ev", ""), f.get("id", "")) for _, f in entries]


async def done(job: Any) -> bool:
    return bool((await job.record()).state is JobState.COMPLETED)


def handlers() -> dict[str, Any]:
    async def ok(ctx: JobContext, data: Any) -> Any:
        await ctx.progress(1)
        await ctx.log("done")
        return data

    async def bad(ctx: JobContext, data: Any) -> None:
        raise Unrecoverable("no")

    return {"ok": ok, "bad": bad}


async def test_default_mode_writes_every_event(queue: Queue) -> None:
    assert await queue.events_mode() is EventsMode.ALL
    job = await queue.add("ok", 1)
    async with running(worker_for(queue, handlers())):
        assert await job.result(timeout=30) == 1
    kinds = [k for k, i in await stream(queue) if i == job.id]
    assert kinds == ["added", "active", "progress", "log", "completed"]


async def test_none_mode_writes_only_rare_events_and_results_still_arrive(queue: Queue) -> None:
    await queue.set_events_mode("none")
    assert await queue.events_mode() is EventsMode.NONE
    good = await queue.add("ok", 2)
    bad = await queue.add("bad", 3)
    async with running(worker_for(queue, handlers())):
        assert await good.result(timeout=30) == 2  # wait() re-reads the record: no event needed
        assert (await bad.wait(timeout=30)).state is JobState.FAILED
    events = await stream(queue)
    assert not [e for e in events if e[0] in HOT_EVENTS], events
    assert ("failed", bad.id) in events  # rare events are written in every mode


async def test_followed_mode_writes_lifecycle_events_only_while_followed(queue: Queue) -> None:
    await queue.set_events_mode(EventsMode.FOLLOWED)
    unseen = await queue.add("ok", 1)
    async with running(worker_for(queue, handlers())):
        # Nobody follows yet: the job runs to completion without a single lifecycle event.
        await wait_for(lambda: done(unseen), what="the unfollowed job completed")
        assert not [e for e in await stream(queue) if e[1] == unseen.id]

        await queue.last_event_id()  # a reader starts following (Job.wait does the same)
        assert all([await queue.client.pttl(part.keys.follow) > 0 for part in parts_of(queue)])
        seen = await queue.add("ok", 2)
        assert await seen.result(timeout=30) == 2
        kinds = [k for k, i in await stream(queue) if i == seen.id]
        assert kinds == ["added", "active", "progress", "log", "completed"]

        for part in parts_of(queue):  # the mark lapses: the reader went away
            await queue.client.delete(part.keys.follow)
        quiet = await queue.add("ok", 3)
        await wait_for(lambda: done(quiet), what="the job completed after the mark lapsed")
    assert not [e for e in await stream(queue) if e[1] == quiet.id]


async def test_wait_in_followed_mode_marks_the_queue_before_reading_state(queue: Queue) -> None:
    """Job.wait follows first, so the end event of a job it waits for is never dropped."""
    await queue.set_events_mode("followed")
    job = await queue.add("ok", 5)
    waiting = asyncio.ensure_future(job.result(timeout=120))

    async def marked() -> bool:
        return any([await queue.client.pttl(part.keys.follow) > 0 for part in parts_of(queue)])

    # The worker starts once the wait has marked the queue: the job ends after the mark, so its end
    # event must be written (a job that ended before any mark has no event, and the wait reads its state).
    await wait_for(marked, timeout=60, what="the wait marked the queue followed")
    async with running(worker_for(queue, handlers())):
        assert await waiting == 5
    assert ("completed", job.id) in await stream(queue)


async def test_an_unknown_mode_is_refused_and_an_unknown_stored_value_reads_as_all(queue: Queue) -> None:
    with pytest.raises(InvalidOptionError):
        await queue.set_events_mode("some")
    await queue.client.hset(queue.keys.meta, "events", "bogus")
    assert await queue.events_mode() is EventsMode.ALL
    job = await queue.add("ok", 1)
    assert ("added", job.id) in await stream(queue)
