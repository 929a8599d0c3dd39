"""The child -> parent hand-over survives processes killed (SIGKILL) between its two halves, with the
parent and the children in different Cluster slots: every child counted once, the parent released once."""

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
N = 20


@contextmanager
def process(url: str, queue: str, mode: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"}
    p = subprocess.Popen([sys.executable, "-m", "tests.flows.handover_worker", url, queue, mode], cwd=ROOT, env=env)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)


async def _events(client: RedisClient, q: Queue, kind: str, job_id: str) -> list[dict[str, Any]]:
    out = []
    for _, fields in await client.xrange(q.keys.events):
        if fields.get("ev") == kind and fields.get("id") == job_id:
            out.append(fields)
    return out


async def _flow(a: Queue, b: Queue) -> Any:
    return await a.add_flow(FlowNode(a.name, "sum", None, children=[FlowNode(b.name, "child", i) for i in range(N)]))


async def _finish_and_check(client: RedisClient, a: Queue, b: Queue, job: Any, url: str) -> None:
    runs: list[str] = []

    async def total(ctx: JobContext, data: Any) -> int:
        runs.append(ctx.job_id)
        return sum((await ctx.children()).results.values())

    with process(url, b.name, "normal"):
        async with workers([a], {a: {"sum": total}}):
            assert await job.result(timeout=90) == sum(range(N))
        await wait_for(lambda: _outbox_empty(client, b), 90, 0.05, "outbox drained")
    assert runs == [job.id]  # the parent ran once
    counted = await _events(client, a, "child", job.id)
    assert len(counted) == N and len({e["child"] for e in counted}) == N  # each child counted once
    assert len(await _events(client, a, "waiting", job.id)) == 1  # released once
    assert len(await _events(client, a, "completed", job.id)) == 1


async def test_killed_after_children_end_before_any_delivery(
    queues: list[Queue], client: RedisClient, backend_url: str
) -> None:
    a, b, _ = queues
    job = await _flow(a, b)
    with process(backend_url, b.name, "no-mover") as p:
        await wait_for(lambda: _completed(b, N), 90, 0.05, "children completed")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert await client.hlen(b.keys.outbox) == N  # the child's half, written with each completion
    assert await a.get_state(job.id) is JobState.WAITING_CHILDREN
    await _finish_and_check(client, a, b, job, backend_url)


async def test_killed_after_delivery_before_the_record_is_deleted(
    queues: list[Queue], client: RedisClient, backend_url: str
) -> None:
    a, b, _ = queues
    job = await _flow(a, b)
    with process(backend_url, b.name, "hang-after-deliver") as p:
        key = f"handover-delivered:{b.name}"
        await wait_for(lambda: _nonempty(client, key), 90, 0.05, "a record delivered")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    first = await client.lrange(key, 0, -1)
    await client.delete(key, f"handover-runs:{b.name}")
    # the delivered record is still there, so it is delivered again below: counted once all the same
    assert await client.hexists(b.keys.outbox, first[0])
    assert len(await _events(client, a, "child", job.id)) >= 1
    await _finish_and_check(client, a, b, job, backend_url)


async def _completed(q: Queue, n: int) -> bool:
    return (await q.counts())[JobState.COMPLETED] >= n


async def _nonempty(client: RedisClient, key: str) -> bool:
    return bool(await client.llen(key))


async def _outbox_empty(client: RedisClient, q: Queue) -> bool:
    return await client.hlen(q.keys.outbox) == 0
