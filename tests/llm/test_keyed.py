"""Keyed jobs: debounce, throttle and latest wins, race-free across several producer processes (the
synchronous client) and worker processes on a real server, plus the exact states in one process."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import JobState, Queue
from conveyor.errors import InvalidOptionError
from conveyor.options import JobOptions
from conveyor.redis.connection import connect
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
PROCS = [sys.executable, "-m", "tests.llm.keyed_procs"]


@pytest.fixture
async def kq(redis_url: str, qname: str) -> AsyncIterator[Queue]:
    client = connect(redis_url)
    queue = Queue(qname, redis=client)
    yield queue
    await queue.obliterate(force=True)
    await client.aclose()


@pytest.fixture
def workers(redis_url: str, qname: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two worker processes; tests await `ready` (a probe job done) before producing."""
    procs = [subprocess.Popen([*PROCS, "worker", redis_url, qname, "5"], cwd=ROOT, env=ENV) for _ in range(2)]
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def produce(url: str, queue: str, name: str, mode: str, *, producers: int, count: int, window_s: float = 0,
            pause_every: int = 0, pause_s: float = 0) -> list[tuple[str, bool]]:
    """Run `producers` processes at once, each adding `count` jobs with key "k"; every (id, created)."""
    args = [url, queue, name, mode, "k", str(window_s), str(count), str(pause_every), str(pause_s)]
    procs = [subprocess.Popen([*PROCS, "produce", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE)
             for _ in range(producers)]
    out: list[tuple[str, bool]] = []
    for p in procs:
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        out += [tuple(json.loads(line)) for line in stdout.decode().splitlines()]  # type: ignore[misc]
    assert len(out) == producers * count
    return out


async def records(queue: Queue, ids: set[str]) -> dict[str, Any]:
    out = {}
    for job_id in ids:
        rec = await queue.get_job(job_id)
        assert rec is not None, job_id
        out[job_id] = rec
    return out


async def ready(queue: Queue) -> None:
    """Wait until the worker processes run jobs (a probe job completes), so producers start against a
    live fleet on a busy machine."""
    probe = await queue.add("run", {"ms": 0})
    await probe.result(timeout=120)


def first_runs(recs: dict[str, Any]) -> list[Any]:
    """Completed jobs that ran once: a retry (after a stall on a busy machine) restarts a job, and the
    guarantees count first starts."""
    return [r for r in recs.values() if r.state == JobState.COMPLETED and r.attempts_made == 1]


async def key_job(queue: Queue) -> str:
    return str(await queue.client.hget(queue.keys.base + "key:k", "job"))


# ---------------------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"key": "k"}, "needs both key and key_mode"),
        ({"key_mode": "debounce", "key_window": 1}, "needs both key and key_mode"),
        ({"key": "k", "key_mode": "sometimes"}, "key_mode must be one of"),
        ({"key": "k", "key_mode": "debounce"}, "needs key_window > 0"),
        ({"key": "k", "key_mode": "throttle", "key_window": 0}, "needs key_window > 0"),
        ({"key": "k", "key_mode": "throttle", "key_window": -1}, "key_window must be >= 0"),
        ({"key": "k", "key_mode": "throttle", "key_window": 86401}, "at most 86400"),
        ({"key": "k", "key_mode": "throttle", "key_window": float("nan")}, "number of seconds"),
        ({"key": "k", "key_mode": "latest", "key_window": 5}, "takes no key_window"),
        ({"key": "k" * 201, "key_mode": "latest"}, "invalid key"),
        ({"key": "a b", "key_mode": "latest"}, "invalid key"),
        ({"key": "k", "key_mode": "latest", "job_id": "x"}, "no job_id or idempotency_key"),
        ({"key": "k", "key_mode": "latest", "idempotency_key": "x"}, "no job_id or idempotency_key"),
    ],
)
async def test_keyed_options_are_checked_before_anything_is_written(
    kq: Queue, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        await kq.add("run", {}, **options)
    assert await kq.client.exists(kq.keys.meta, kq.keys.events) == 0


async def test_keyed_jobs_are_not_enqueued_in_bulk(kq: Queue) -> None:
    opts = JobOptions(key="k", key_mode="latest")
    with pytest.raises(InvalidOptionError, match="one at a time"):
        await kq.add_bulk([{"name": "run", "options": opts}, {"name": "run", "options": opts}])
    assert await kq.client.exists(kq.keys.events) == 0


# ------------------------------------------------------------------- one process (standalone and Cluster)


async def test_debounce_replaces_the_waiting_job_and_delays_the_new_one(queue: Queue) -> None:
    jobs = [await queue.add("run", {"i": i}, key="k", key_mode="debounce", key_window=30) for i in range(3)]
    states = [await queue.get_state(j.id) for j in jobs]
    assert states == [JobState.CANCELLED, JobState.CANCELLED, JobState.DELAYED]
    assert await key_job(queue) == jobs[-1].id
    assert (await queue.get_job(jobs[-1].id)).options["key_mode"] == "debounce"  # type: ignore[union-attr]
    events = [e for e in await queue.read_events("0-0") if e.type == "cancelled"]
    assert [(e.job_id, e.fields["by"]) for e in events] == [(jobs[0].id, jobs[1].id), (jobs[1].id, jobs[2].id)]
    other = await queue.add("run", {}, key="other", key_mode="debounce", key_window=30)
    assert await queue.get_state(other.id) == JobState.DELAYED  # another key is independent
    assert await queue.get_state(jobs[-1].id) == JobState.DELAYED


async def test_throttle_returns_the_waiting_job_and_spaces_the_next_one(queue: Queue) -> None:
    first = await queue.add("run", {"i": 0}, key="k", key_mode="throttle", key_window=30)
    again = await queue.add("run", {"i": 1}, key="k", key_mode="throttle", key_window=30)
    assert first.created and not again.created and again.id == first.id
    assert await queue.get_state(first.id) == JobState.WAITING  # the first of a key is not held back
    assert await queue.client.xlen(queue.keys.events) == 1  # the coalesced add wrote nothing


async def test_latest_cancels_the_queued_job(queue: Queue) -> None:
    a = await queue.add("run", {}, key="k", key_mode="latest")
    b = await queue.add("run", {}, key="k", key_mode="latest")
    assert await queue.get_state(a.id) == JobState.CANCELLED and await queue.get_state(b.id) == JobState.WAITING


# ---------------------------------------------------------------------------------------- fleets


async def test_debounce_with_concurrent_producers_leaves_exactly_one_job(kq: Queue, redis_url: str) -> None:
    added = produce(redis_url, kq.name, "run", "debounce", producers=4, count=25, window_s=60)
    ids = {job_id for job_id, created in added}
    assert all(created for _, created in added) and len(ids) == 100
    recs = await records(kq, ids)
    alive = [j for j, r in recs.items() if r.state != JobState.CANCELLED]
    assert alive == [await key_job(kq)]
    assert recs[alive[0]].state == JobState.DELAYED
    assert recs[alive[0]].created_ms == max(r.created_ms for r in recs.values())  # the last add won


async def test_debounce_with_workers_runs_a_job_only_after_a_quiet_window(
    kq: Queue, redis_url: str, workers: list[Any]
) -> None:
    window_ms = 300
    await ready(kq)
    added = produce(redis_url, kq.name, "run", "debounce", producers=2, count=30, window_s=window_ms / 1000,
                    pause_every=10, pause_s=0.6)
    ids = {job_id for job_id, _ in added}

    async def settled() -> bool:
        states = [await kq.get_state(j) for j in ids]
        return all(s in (JobState.COMPLETED, JobState.CANCELLED) for s in states)

    await wait_for(settled, timeout=60, what="every debounced job completed or replaced")
    recs = await records(kq, ids)
    assert recs[await key_job(kq)].state == JobState.COMPLETED  # the last add always runs
    ran = first_runs(recs)
    assert ran
    for job in ran:
        assert job.started_ms is not None and job.created_ms is not None
        assert job.started_ms >= job.created_ms + window_ms
        # No job of the key was added between this one and its start: it would have replaced it.
        assert not [r for r in recs.values() if job.created_ms < r.created_ms < job.started_ms], job.id  # type: ignore[operator]


async def test_throttle_with_concurrent_producers_and_workers_starts_jobs_a_window_apart(
    kq: Queue, redis_url: str, workers: list[Any]
) -> None:
    window_ms = 400
    await ready(kq)
    added = produce(redis_url, kq.name, "run", "throttle", producers=3, count=30, window_s=window_ms / 1000,
                    pause_every=5, pause_s=0.2)
    created = {job_id for job_id, c in added if c}
    assert {job_id for job_id, _ in added} == created  # a coalesced add returns a job that was created
    assert 2 <= len(created) < len(added)  # adds while a job of the key waited returned it

    async def done() -> bool:
        return all([await kq.get_state(j) == JobState.COMPLETED for j in created])

    await wait_for(done, timeout=60, what="every throttled job completed")
    starts = sorted(r.started_ms for r in first_runs(await records(kq, created)))
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap >= window_ms for gap in gaps), gaps  # Redis-clock lease times: never two within a window


async def test_latest_wins_with_concurrent_producers_cancels_queued_and_running_jobs(
    kq: Queue, redis_url: str, workers: list[Any]
) -> None:
    await ready(kq)
    added = produce(redis_url, kq.name, "hang", "latest", producers=3, count=15, pause_every=3, pause_s=0.2)
    ids = {job_id for job_id, _ in added}
    last = await key_job(kq)

    async def only_last_left() -> bool:
        states = {j: await kq.get_state(j) for j in ids}
        return all(s == JobState.CANCELLED for j, s in states.items() if j != last)

    await wait_for(only_last_left, timeout=60, what="every job but the latest cancelled")
    recs = await records(kq, ids)
    assert recs[last].state in (JobState.WAITING, JobState.ACTIVE) and not recs[last].cancel_requested
    assert recs[last].created_ms == max(r.created_ms for r in recs.values())
    ran = [r for r in recs.values() if r.started_ms is not None and r.id != last]
    assert ran, "some superseded job was running when a newer one came (cancelled through its worker)"
    await kq.cancel(last)


async def _redis_ms(queue: Queue) -> int:
    seconds, micros = await queue.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_throttle_waits_a_window_after_the_last_start_even_when_its_record_is_gone(kq: Queue) -> None:
    from conveyor import Worker

    release = asyncio.Event()

    async def run(ctx: Any, data: Any) -> None:
        await release.wait()

    worker = Worker(kq, {"run": run}, concurrency=2, lease_ms=5000, idle_block_s=0.5)
    await worker.start()
    try:
        first = await kq.add("run", {}, key="k", key_mode="throttle", key_window=60, result_ttl=0)
        await wait_for(lambda: _active(kq, first.id), what="the first job started")
        started = (await kq.get_job(first.id)).started_ms  # type: ignore[union-attr]
        second = await kq.add("run", {}, key="k", key_mode="throttle", key_window=60)
        assert await kq.get_state(second.id) == JobState.DELAYED
        due = await kq.client.zscore(kq.keys.delayed, second.id)
        # The key remembers the start from the claim's clock reading, the record from the run's: a
        # loaded server may put a millisecond or two between them.
        assert due is not None and abs(due - (started + 60_000)) <= 5, (due, started)
        await kq.cancel(second.id)
        release.set()
        await wait_for(lambda: _gone(kq, first.id), what="the first job's record deleted (result_ttl=0)")
        before = await _redis_ms(kq)
        third = await kq.add("run", {}, key="k", key_mode="throttle", key_window=60)
        # The last job of the key (`second`) never started, but `first` did: its start still counts.
        due = await kq.client.zscore(kq.keys.delayed, third.id)
        assert due is not None and abs(due - (started + 60_000)) <= 5, (due, started)
        fourth = await kq.add("run", {}, key="k2", key_mode="throttle", key_window=60)
        # Another key is not held back: ready at once (the running worker may already have it).
        assert await kq.client.zscore(kq.keys.delayed, fourth.id) is None
        assert await kq.get_state(fourth.id) != JobState.DELAYED
        await kq.client.hset(kq.keys.base + "key:k2", "job", "no-such-job")
        fifth = await kq.add("run", {}, key="k2", key_mode="throttle", key_window=60)
        assert await kq.client.zscore(kq.keys.delayed, fifth.id) >= before + 60_000  # type: ignore[operator]
    finally:
        release.set()
        await worker.close(5.0)


async def _active(queue: Queue, job_id: str) -> bool:
    return await queue.get_state(job_id) == JobState.ACTIVE


async def _gone(queue: Queue, job_id: str) -> bool:
    return await queue.get_state(job_id) is None
