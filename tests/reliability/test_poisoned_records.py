"""Job records edited by hand (or written by another client) reach a worker: each job whose stored
options or attempt count the runner cannot use fails with a clear `InvalidJob` error without its
handler running, other jobs keep flowing, and no job is handed back and run again in a loop."""

from __future__ import annotations

from typing import Any

from conveyor import JobContext, JobState, Queue, Worker, codec
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
    "attempt-count-past-2**63": {"attempts": "99999999999999999999999"},
}


async def test_poisoned_records_fail_with_a_clear_error_and_never_loop(queue: Queue) -> None:
    """Before, `attempts` stored as a string made the runner's bookkeeping raise, so every run
    ended handed back without using an attempt and the job ran again at once, thousands of times a
    second; an attempt count past 2**63 read as a negative attempt and the job retried for ever; a
    `timeout` the runner could not use failed the job while a sync handler's thread went on."""
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
