"""Job records edited by hand (or written by another client) reach a worker: each job whose stored
options the runner cannot use fails with a clear `InvalidJob` error without its handler running, a
count that is not a count reads as 0, other jobs keep flowing, no job is handed back and run again in
a loop, and no poisoned record stops the stalled-job sweep."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor import InvalidJobError, JobContext, JobState, Queue, Retry, Worker, codec
from tests.conftest import running, wait_for

# Each: the fields written over a freshly added job's record before any worker sees it.
POISONED: dict[str, dict[str, str]] = {
    "attempts-a-string": {"opts": '{"attempts":"3"}'},
    "attempts-negative": {"opts": '{"attempts":-5}'},
    "attempts-fractional": {"opts": '{"attempts":2.5}'},
    "attempts-huge": {"opts": '{"attempts":1e308}'},
    "timeout-a-string": {"opts": '{"timeout":"5"}'},
    "timeout-a-list": {"opts": '{"timeout":[1]}'},
    "timeout-negative": {"opts": '{"timeout":-1}'},
    "options-a-list": {"opts": "[1,2]"},
    "options-not-json": {"opts": "{{{"},
}


async def test_poisoned_records_fail_with_a_clear_error_and_never_loop(queue: Queue) -> None:
    """Before, `attempts` stored as a string made the runner's bookkeeping raise, so every run
    ended handed back without using an attempt and the job ran again at once, thousands of times a
    second; a `timeout` the runner could not use failed the job while a sync handler's thread went
    on."""
    runs: dict[str, int] = {}

    def handler(ctx: JobContext, data: Any) -> str:
        runs[data] = runs.get(data, 0) + 1
        raise RuntimeError("the handler ran")

    async def ok(ctx: JobContext, data: Any) -> str:
        return "ok"

    await queue.pause()
    ids: dict[str, str] = {}
    for case, fields in POISONED.items():
        job = await queue.add("h", case, attempts=1)
        await queue.client.hset(queue.keys.job(job.id), mapping=fields)
        ids[case] = job.id
    await queue.resume()
    worker = Worker(queue, {"h": handler, "ok": ok}, concurrency=4)
    async with running(worker):
        after = await queue.add("ok")
        assert await after.result(timeout=30) == "ok", "other jobs keep flowing"

        async def all_failed() -> bool:
            return all([await queue.get_state(i) is JobState.FAILED for i in ids.values()])

        await wait_for(all_failed, what="every poisoned job failed")
        for case, job_id in ids.items():
            error = codec.loads(await queue.client.hget(queue.keys.job(job_id), "error"))
            assert error["type"] == "InvalidJob", (case, error)
        assert all(not task.done() for task in worker.loop_tasks.values())
    assert runs == {}, "no poisoned job's handler ran"
    assert worker.stats.returned == 0 and worker.stats.retried == 0, "nothing was handed back or retried"


async def test_a_page_of_records_reads_past_poisoned_fields(queue: Queue) -> None:
    """Before, one record with a field that could not be parsed (options or data that are not JSON,
    an attempt count Lua wrote as '1e+23', a state that is not a state) made reading it raise, and
    with it the whole page of jobs it was on (the API's job list answered 500). Now the page is
    read: unreadable fields show as stored or as their defaults, and a state that is not a state
    is the state of the set the id was listed from; reading that one job alone says what is wrong."""
    await queue.pause()
    fine = await queue.add("h", {"n": 1})
    bad = await queue.add("h", {"n": 2})
    strange = await queue.add("h", {"n": 3})
    await queue.client.hset(queue.keys.job(bad.id), mapping={
        "opts": "[1,2]", "data": "{{{", "attempts": "9.9999999999999992e+22", "prio": "x", "error": "oops",
        "started": "soon",
    })
    await queue.client.hset(queue.keys.job(strange.id), mapping={"state": "bogus"})
    page = await queue.list_jobs(JobState.WAITING)
    records = {r.id: r for r in page.jobs}
    assert set(records) == {fine.id, bad.id, strange.id}
    assert records[fine.id].data == {"n": 1}
    poisoned = records[bad.id]
    assert poisoned.options == {} and poisoned.data == "{{{" and poisoned.priority == 0
    assert poisoned.attempts_made == 99999999999999991611392 and poisoned.started_ms is None
    assert poisoned.error == {"type": "Unreadable", "message": "oops"}
    assert records[strange.id].state is JobState.WAITING
    with pytest.raises(InvalidJobError, match="bogus"):
        await queue.get_job(strange.id)
    with pytest.raises(InvalidJobError, match="bogus"):
        await queue.get_state(strange.id)
    assert (await queue.get_job(bad.id)) == poisoned


@pytest.mark.parametrize("stored", ["1e400", "inf", "9007199254740993"])
async def test_a_meta_counter_edited_past_2_53_still_hands_out_distinct_ids_and_tokens(
    queue: Queue, stored: str
) -> None:
    """Before, a queue's `id` or `token` counter edited to a value a double cannot count on by
    ones (inf, 2^53 and over) made every next number equal the last: each new job got the same id
    (overwriting the one before it) and each lease the same token (no fencing). Now such a value is
    ignored and the counter goes on from the clock."""
    tokens: list[str] = []

    async def ok(ctx: JobContext, data: Any) -> Any:
        tokens.append(ctx.token)
        return data

    await queue.add("ok", -1)  # the meta hash exists
    await queue.client.hset(queue.keys.meta, mapping={"id": stored, "token": stored})
    jobs = [await queue.add("ok", n) for n in range(3)]
    jobs += await queue.add_bulk([{"name": "ok", "data": n} for n in range(3, 6)])
    assert len({job.id for job in jobs}) == 6, [job.id for job in jobs]
    async with running(Worker(queue, {"ok": ok})):
        assert [await job.result(timeout=30) for job in jobs] == list(range(6))
    assert len(set(tokens)) == len(tokens) == 7, tokens


async def test_a_poisoned_record_never_stops_the_stalled_sweep(queue: Queue) -> None:
    """Before, the sweep added to a job's `stalls`, `lapses` and `attempts` with HINCRBY, which fails
    on a field that is not an integer (a hand edit, or an attempt count the claim wrote as
    '1e+23'): the whole sweep script failed, its loop ended, and no stalled job of the queue was
    recovered again. An attempt count past 2**63 also read as a negative attempt, so the job retried
    for ever. Now such a count reads as 0, and both leases of a dead worker are recovered."""
    await queue.pause()
    poisoned = await queue.add("ok", "poisoned")
    plain = await queue.add("ok", "plain")
    huge = await queue.add("ok", "huge")
    await queue.client.hset(queue.keys.job(huge.id), "attempts", "99999999999999999999999")
    # `poisoned` and `plain` were leased by a worker that died: confirmed runs whose leases expired.
    for job, fields in ((poisoned, {"stalls": "abc", "lapses": "1e400", "attempts": "9.9999999999999992e+22"}),
                        (plain, {})):
        await queue.client.zrem(queue.keys.ready, job.id)
        await queue.client.hset(queue.keys.job(job.id),
                                mapping={"state": "active", "token": "dead", "run": "dead", **fields})
        await queue.client.zadd(queue.keys.active, {job.id: 1})
    await queue.resume()
    attempts: dict[str, int] = {}

    async def ok(ctx: JobContext, data: Any) -> Any:
        attempts[data] = ctx.attempt
        return data

    async with running(Worker(queue, {"ok": ok}, stalled_interval_ms=100)) as worker:
        for job in (huge, plain, poisoned):
            assert await job.result(timeout=30) == (await job.record()).data
        assert all(not task.done() for task in worker.loop_tasks.values()), "the sweep loop lives"
    assert attempts == {"huge": 1, "plain": 1, "poisoned": 1}
    assert (await poisoned.record()).stalls == 1 and (await plain.record()).stalls == 1


@pytest.mark.parametrize("field", ["seq", "hwait", "hver", "gwait", "completed_bytes"])
async def test_a_spoiled_meta_counter_never_wedges_the_queue(queue: Queue, field: str) -> None:
    """Before, a counter in the queue's `meta` hash edited to something that is not an integer made
    every script that adds to it fail whole (HINCRBY): `seq` refused every add and every retry,
    `hwait`/`hver` every trip that held a job, `completed_bytes` every trip that recorded a
    completion; the worker's pump crashed on each resend, so the whole queue stood still. Now such
    a counter starts again from the amount added."""
    async def ok(ctx: JobContext, data: Any) -> Any:
        if data == "retry" and ctx.attempt == 1:
            raise Retry(after=0)
        return data

    async def other(ctx: JobContext, data: Any) -> Any:
        return data

    await queue.add("ok", "first")  # the meta hash exists
    await queue.client.hset(queue.keys.meta, field, "garbage")
    jobs = [await queue.add("ok", "plain", result_ttl=60), await queue.add("ok", "retry", attempts=2),
            await queue.add("ok", "grouped", group="g"), await queue.add("other", "held")]
    worker = Worker(queue, {"ok": ok})
    async with running(worker):
        for job in jobs[:3]:
            assert await job.result(timeout=30) == (await job.record()).data
        await wait_for(lambda: worker.stats.held >= 1, what="the job without a handler here was held")
        async with running(Worker(queue, {"other": other})):
            assert await jobs[3].result(timeout=30) == "held"
        assert all(not task.done() for task in worker.loop_tasks.values()), "the pump lives"


@pytest.mark.parametrize("prio", ["nan", "-nan"])
async def test_a_spoiled_priority_never_loses_the_job_going_back_to_ready(queue: Queue, prio: str) -> None:
    """Before, a job's stored priority edited to 'nan' (which Lua reads as a number) made its
    ready-set score 'nan', which ZADD refuses: the trip recording its retry failed after marking it
    waiting, so the job was in no set (lost) and the pump crashed; a delayed one failed every
    claim of the queue once due. Now such a priority (or one out of [-1000, 1000]) reads as 0."""
    async def ok(ctx: JobContext, data: Any) -> Any:
        if data == "retry" and ctx.attempt == 1:
            raise Retry(after=0)
        return data

    await queue.pause()
    retried = await queue.add("ok", "retry", attempts=2)
    delayed = await queue.add("ok", "delayed", delay=0.2)
    for job in (retried, delayed):
        await queue.client.hset(queue.keys.job(job.id), "prio", prio)
    await queue.resume()
    worker = Worker(queue, {"ok": ok}, heartbeat_ms=100, stalled_interval_ms=200)
    async with running(worker):
        assert await retried.result(timeout=30) == "retry"
        assert await delayed.result(timeout=30) == "delayed"
        assert all(not task.done() for task in worker.loop_tasks.values())
    assert worker.loop_restarts == 0


async def test_a_negative_stored_result_ttl_never_fails_a_completed_job(queue: Queue) -> None:
    """Before, a job whose stored options held a negative result_ttl (edited by hand, or written by
    a client that did not check it) completed, but finish-10.lua refused the outcome's record TTL
    and the worker recorded the job as failed (InvalidOutcome). Now such a TTL reads as unset: the
    result is kept."""
    async def ok(ctx: JobContext, data: Any) -> Any:
        return data

    await queue.pause()
    job = await queue.add("ok", "done")
    await queue.client.hset(queue.keys.job(job.id), "opts", '{"result_ttl":-5}')
    await queue.resume()
    async with running(Worker(queue, {"ok": ok})):
        assert await job.result(timeout=30) == "done"
