"""Helpers for the limits suite: a fleet of real worker processes and readers of claim records."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from conveyor import Queue
from conveyor.redis.connection import RedisClient, connect
from tests.limits.fleet_worker import test_key

ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """Worker processes (tests/limits/fleet_worker.py) serving one queue on one server."""

    def __init__(self, url: str, queue: str) -> None:
        self.url = url
        self.queue = queue
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, processes: int = 3, concurrency: int = 5, limiters: str = "[]") -> Fleet:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(processes):
            fd, log = tempfile.mkstemp(prefix="conveyor-fleet-", suffix=".log")
            self.logs.append(Path(log))
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.limits.fleet_worker", self.url, self.queue, str(concurrency), limiters],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=fd,
            ))
            os.close(fd)
        return self

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.procs.clear()
        for log in self.logs:
            log.unlink(missing_ok=True)
        self.logs.clear()

    def kill(self, index: int) -> subprocess.Popen[bytes]:
        """SIGKILL process `index` (no cleanup runs in it) and stop watching it."""
        proc = self.procs.pop(index)
        proc.kill()
        proc.wait(10)
        self.logs.pop(index).unlink(missing_ok=True)
        return proc

    def check_alive(self) -> None:
        for p, log in zip(self.procs, self.logs, strict=True):
            if p.poll() is not None:
                raise AssertionError(f"worker process exited with {p.returncode}: {log.read_text()[-2000:]}")


@pytest.fixture
def fleet(redis_url: str) -> Iterator[Callable[[str], Fleet]]:
    fleets: list[Fleet] = []

    def make(queue: str) -> Fleet:
        f = Fleet(redis_url, queue)
        fleets.append(f)
        return f

    yield make
    for f in fleets:
        f.stop()


@pytest.fixture
async def sq(redis_url: str, qname: str) -> AsyncIterator[Queue]:
    """A queue on the standalone server (the one fleet processes use)."""
    client = connect(redis_url)
    q = Queue(qname, redis=client)
    yield q
    await q.obliterate(force=True)
    keys = [k async for k in client.scan_iter(match=test_key(qname, "*"))]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def claim_records(queue: Queue, ids: Sequence[str] | None = None) -> list[dict[str, str]]:
    """token, started (Redis ms at claim), group, cost and state of jobs (default: all completed)."""
    client: RedisClient = queue.client
    if ids is None:
        ids = list(await client.zrange(queue.keys.completed, 0, -1))
    out = []
    for job_id in ids:
        token, started, group, cost, state = await client.hmget(
            queue.keys.job(job_id), ["token", "started", "group", "cost", "state"]
        )
        out.append({"id": job_id, "token": token, "started": started, "group": group, "cost": cost,
                    "state": state})
    return out


def max_in_window(points: Sequence[tuple[int, int]], window_ms: int) -> int:
    """Largest total weight of (time_ms, weight) points inside any half-open window [t, t + window)."""
    pts = sorted(points)
    best = total = j = 0
    for i in range(len(pts)):
        while j < len(pts) and pts[j][0] < pts[i][0] + window_ms:
            total += pts[j][1]
            j += 1
        best = max(best, total)
        total -= pts[i][1]
    return best


async def seen_max(queue: Queue, group: str = "*") -> int:
    """Highest in-flight count the handlers saw (group '*' = all jobs)."""
    values = await queue.client.lrange(test_key(queue.name, f"seen:{group}"), 0, -1)
    return max((int(v) for v in values), default=0)


async def claim_ranks(queue: Queue, ids: Sequence[str]) -> dict[str, int]:
    """Claim order of the jobs `ids` that were claimed: 1 for the first claim, 2 for the next...
    (lease tokens only grow, but are not consecutive: the counter is floored by Redis time)."""
    async with queue.client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hget(queue.keys.job(job_id), "token")
        tokens = await pipe.execute()
    claimed = sorted((int(t), job_id) for t, job_id in zip(tokens, ids, strict=True) if t)
    return {job_id: rank for rank, (_, job_id) in enumerate(claimed, start=1)}

