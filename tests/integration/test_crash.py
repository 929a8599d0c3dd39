"""SIGKILL a worker process in the middle of jobs: every job still completes, each exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conveyor import JobState, Queue
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
N = 400


def spawn(url: str, queue: str, worker_id: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.crash_worker", url, queue, worker_id],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@pytest.mark.slow
async def test_sigkill_mid_jobs_loses_nothing_and_completes_each_once(queue: Queue, backend_url: str) -> None:
    jobs = await queue.add_bulk([{"name": "work", "data": i} for i in range(N)])
    victim = spawn(backend_url, queue.name, "victim")
    survivor = None
    try:
        async def completed() -> int:
            return (await queue.counts())[JobState.COMPLETED]

        await wait_for(lambda: _at_least(completed, N // 5), timeout=30, what="victim made progress")
        active_before_kill = (await queue.counts())[JobState.ACTIVE]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        assert active_before_kill > 0, "the kill must land while jobs are active"
        survivor = spawn(backend_url, queue.name, "survivor")
        await wait_for(lambda: _at_least(completed, N), timeout=60, what="all jobs completed")
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)

    counts = await queue.counts()
    assert counts[JobState.COMPLETED] == N
    assert sum(v for k, v in counts.items() if k is not JobState.COMPLETED) == 0

    events = await _all_events(queue)
    completed_per_job = Counter(e.job_id for e in events if e.type == "completed")
    assert set(completed_per_job) == {j.id for j in jobs}
    assert max(completed_per_job.values()) == 1, "a job was completed twice"
    stalled = {e.job_id for e in events if e.type == "stalled"}
    assert stalled, "the killed worker's jobs must have been recovered by the stalled sweep"

    runs = await queue.client.lrange(f"crash-runs:{queue.name}", 0, -1)
    await queue.client.delete(f"crash-runs:{queue.name}")
    by_job: dict[str, list[tuple[str, str]]] = {}
    for entry in runs:
        job_id, token, worker = entry.split(":")
        by_job.setdefault(job_id, []).append((token, worker))
    for job in jobs:
        rec = await job.record()
        # The stored result is the worker whose lease was current at completion.
        assert rec.result in {w for _, w in by_job[job.id]}
    for job_id in stalled:
        rec = await queue.get_job(job_id)
        # One expired lease each: a stall if a heartbeat had confirmed the run, else a lapse.
        assert rec is not None and rec.result == "survivor" and rec.stalls + rec.lapses == 1


async def _at_least(fn, n: int) -> bool:  # type: ignore[no-untyped-def]
    return int(await fn()) >= n


async def _all_events(queue: Queue):  # type: ignore[no-untyped-def]
    out = []
    cursor = "0-0"
    while True:
        batch = await queue.read_events(cursor, count=5000)
        if not batch:
            return out
        out.extend(batch)
        cursor = batch[-1].id
