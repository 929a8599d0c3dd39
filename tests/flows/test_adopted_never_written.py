"""A parent killed between adopting its dynamic children and writing them, then failed for good
(stalled past max_stalls), and retried: it runs again and adds them, instead of waiting for ever
for children that do not exist (docs/flows.md, "Retrying a failed or cancelled parent")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor import JobContext, JobState, Queue
from conveyor.flows import FlowNode
from conveyor.redis.connection import RedisClient
from tests.conftest import wait_for
from tests.flows.conftest import workers

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def _adopting_worker(url: str, queue: str, child_queue: str) -> Iterator[None]:
    """tests/flows/adopt_worker.py, SIGKILLed on leaving."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    p = subprocess.Popen([sys.executable, "-m", "tests.flows.adopt_worker", url, queue, child_queue], cwd=ROOT, env=env)
    try:
        yield
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)


async def test_a_parent_killed_between_adopt_and_add_then_failed_and_retried_runs_again(
    queues: list[Queue], client: RedisClient, backend_url: str
) -> None:
    """Before, the retry sent the parent to waiting-children (its `pending` counted the adopted
    children), where it waited for ever: the children were never written, so none could end."""
    a, b, _ = queues
    job = await a.add("spawn", None)
    with _adopting_worker(backend_url, a.name, b.name):
        await wait_for(lambda: _nonempty(client, f"adopted:{a.name}"), 90, 0.05, "the children adopted")
        # a heartbeat confirmed the run, so the lease's expiry is a stall (not a lapse)
        await wait_for(lambda: _confirmed(client, a, job.id), 90, 0.05, "the run confirmed")
    await client.delete(f"adopted:{a.name}")
    rec = await job.record()
    assert len(rec.children) == 3 and rec.state is JobState.ACTIVE
    for q_name, child in rec.children:
        assert not await client.exists(Queue(q_name, redis=client).keys.job(child))  # never written

    runs: list[str] = []

    async def spawn(ctx: JobContext, data: Any) -> int:
        runs.append(ctx.job_id)
        children = await ctx.children()
        if not children.all_ended:
            await ctx.add_children([FlowNode(b.name, "child", i) for i in range(3)])
            ctx.wait_for_children()
        return sum(children.results.values())

    async def child(ctx: JobContext, n: int) -> int:
        return n + 10

    async with workers([a], {a: {"spawn": spawn}}, max_stalls=0):  # its sweep fails the stalled parent
        await wait_for(lambda: _state_is(a, job.id, JobState.FAILED), 90, what="the stalled parent fails")
    assert (await job.record()).error["type"] == "Stalled"  # type: ignore[index]
    assert await a.retry(job.id) is JobState.WAITING
    async with workers(queues, {a: {"spawn": spawn}, b: {"child": child}}):
        assert await job.result(timeout=90) == 10 + 11 + 12
    assert runs == [job.id, job.id]  # added its children again, then ran with their results


async def test_retrying_a_parent_left_waiting_for_unwritten_children_sends_it_to_run(
    queues: list[Queue], client: RedisClient
) -> None:
    """A parent left in waiting-children for children never written (the look-up after an earlier
    retry did not happen): retrying it again does the look-up, rather than refuse it as not failed."""
    a, b, _ = queues
    job = await a.add("spawn", None)
    ref = f"{b.name}:{job.id}.c0.0"
    await client.hset(a.keys.job(job.id), mapping={"state": "waiting-children", "kids": ref, "pending": 1,
                                                   "started": 1})
    await client.zrem(a.keys.ready, job.id)
    await client.zadd(a.keys.base + "waiting-children", {job.id: 1})
    assert await a.retry(job.id) is JobState.WAITING
    assert await a.get_state(job.id) is JobState.WAITING


async def _confirmed(client: RedisClient, q: Queue, job_id: str) -> bool:
    run, token = await client.hmget(q.keys.job(job_id), ["run", "token"])
    return run is not None and run == token


async def _nonempty(client: RedisClient, key: str) -> bool:
    return bool(await client.llen(key))


async def _state_is(q: Queue, job_id: str, state: JobState) -> bool:
    return await q.get_state(job_id) is state
