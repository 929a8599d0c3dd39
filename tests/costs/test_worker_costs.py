"""Cost accounting in real workers: usage reported by handlers is recorded per tenant and task, and a
tenant's hard budget holds across several worker processes (wait for the next period, or fail)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.costs import Budget, CostLedger, Price
from conveyor.redis.connection import RedisClient, connect
from tests.conftest import running, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _prefix() -> str:
    return f"cvt{uuid.uuid4().hex[:10]}"


async def test_reported_usage_is_recorded_per_tenant_and_task(client: RedisClient, qname: str) -> None:
    prefix = _prefix()
    queue = Queue(qname, redis=client, prefix=prefix)
    ledger = CostLedger(client, prefix)
    await ledger.set_price(Price("small", 1, 2))

    async def call(ctx: JobContext, data: dict[str, Any]) -> None:
        ctx.add_usage(data["in"], data["out"], model="small")
        ctx.add_usage(data["in"], 0, model="small")  # a second provider request of the same run

    async def silent(ctx: JobContext, data: dict[str, Any]) -> None:
        return None

    for i in range(6):
        await queue.add("call", {"in": 1000, "out": 500}, group=["acme", "globex"][i % 2])
    await queue.add("call", {"in": 10, "out": 10})
    await queue.add("silent", {}, group="acme")
    async with running(Worker(queue, {"call": call, "silent": silent}, concurrency=4, costs=True)):
        await wait_for(lambda: _completed(queue, 8), what="all jobs completed")
        await wait_for(lambda: _runs(ledger, 7), what="usage recorded")
    report = await ledger.usage()
    rows = {(r["group"], r["task"]): r for r in report["rows"]}
    assert rows["acme", "call"]["runs"] == 3 and rows["acme", "call"]["tokens_in"] == 6000
    assert rows["acme", "call"]["tokens_out"] == 1500
    assert rows["acme", "call"]["cost_nano"] == 6000 * 1000 + 1500 * 2000
    assert rows["globex", "call"]["runs"] == 3 and rows[None, "call"]["tokens_in"] == 20
    assert ("acme", "silent") not in rows  # a run that reported nothing costs nothing
    await queue.obliterate(force=True)


async def _completed(queue: Queue, n: int) -> bool:
    return int((await queue.counts()).get("completed", 0)) >= n


async def _runs(ledger: CostLedger, n: int) -> bool:
    return int((await ledger.usage())["totals"]["runs"]) >= n


async def test_hard_budget_fails_runs_with_a_clear_error(client: RedisClient, qname: str) -> None:
    prefix = _prefix()
    queue = Queue(qname, redis=client, prefix=prefix)
    ledger = CostLedger(client, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(hard="0.002", on_hard="fail", estimate="0.001"))

    async def call(ctx: JobContext, data: dict[str, Any]) -> None:
        ctx.report_usage(1000, 0)

    jobs = [await queue.add("call", {}, group="acme") for _ in range(5)]
    other = await queue.add("call", {}, group="globex")
    async with running(Worker(queue, {"call": call}, concurrency=1, costs=True)):
        await wait_for(lambda: _completed_or_failed(queue, 6), what="every job ended")
    records = [await queue.get_job(j.id) for j in jobs]
    failed = [r for r in records if r is not None and str(r.state) in ("failed", "JobState.FAILED")]
    assert len(failed) == 3
    assert all(r.error is not None and r.error["type"] == "BudgetExceededError" and "acme" in r.error["message"]
               for r in failed)
    assert (await ledger.budget("acme"))["spent_nano"] == 2_000_000
    other_record = await queue.get_job(other.id)
    assert other_record is not None and other_record.result is None and "complet" in str(other_record.state).lower()
    await queue.obliterate(force=True)


async def test_a_run_that_fits_once_running_runs_record_waits_instead_of_failing(
    client: RedisClient, qname: str,
) -> None:
    """Runs cost half their estimate. While one run holds its estimate, a second does not fit beside
    the reservation but does fit beside what is spent: it is not over the budget, so it goes back for
    a moment (even with on_hard='fail') and runs once the first has recorded what it really cost. No
    budget_hard event is sent: the spend never reaches the limit."""
    prefix = _prefix()
    queue = Queue(qname, redis=client, prefix=prefix)
    ledger = CostLedger(client, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(hard="0.003", on_hard="fail", estimate="0.002"))
    release = asyncio.Event()

    async def call(ctx: JobContext, data: dict[str, Any]) -> None:
        await release.wait()
        ctx.report_usage(1000, 0)  # 0.001

    jobs = [await queue.add("call", {"n": i}, group="acme") for i in range(2)]

    async def one_running_one_back() -> bool:
        counts = await queue.counts()
        back = int(counts.get("delayed", 0)) + int(counts.get("waiting", 0)) + int(counts.get("failed", 0))
        return int(counts.get("active", 0)) == 1 and back == 1 and \
            int((await ledger.budget("acme"))["reserved_nano"]) == 2_000_000 and \
            await _refused_once(queue, [j.id for j in jobs])

    async with running(Worker(queue, {"call": call}, concurrency=2, costs=True)):
        await wait_for(one_running_one_back, what="one run holding its estimate, the other refused")
        assert int((await queue.counts()).get("failed", 0)) == 0
        release.set()
        await wait_for(lambda: _completed_or_failed(queue, 2), what="both jobs ended")
    assert int((await queue.counts()).get("completed", 0)) == 2
    state = await ledger.budget("acme")
    assert state["spent_nano"] == 2_000_000 and state["reserved_nano"] == 0 and state["status"] == "ok"
    assert "budget_hard" not in {e["type"] for e in await ledger.events()}
    await queue.obliterate(force=True)


async def _refused_once(queue: Queue, ids: list[str]) -> bool:
    """Has a run of one of these jobs been turned away by the budget (failed, or back with a reason)?"""
    for job_id in ids:
        record = await queue.get_job(job_id)
        if record is not None and str(record.state).lower().endswith(("failed", "delayed")):
            return True
    return False


async def _completed_or_failed(queue: Queue, n: int) -> bool:
    counts = await queue.counts()
    return int(counts.get("completed", 0)) + int(counts.get("failed", 0)) >= n


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.mark.parametrize("backend", ["standalone", "cluster"])
async def test_hard_budget_holds_across_worker_processes(
    backend: str, request: pytest.FixtureRequest, qname: str, procs: list[subprocess.Popen[bytes]],
) -> None:
    """Three processes of 4 slots run jobs of two tenants; acme's hard budget pays for exactly 10
    runs. Exactly 10 acme runs call the provider, the rest wait for the next day (acme blocked),
    globex (no budget) runs everything, and acme's spend never passes its hard limit."""
    server = request.getfixturevalue("cluster_servers" if backend == "cluster" else "redis_server")
    url = str(server.url)
    prefix = _prefix()
    client = connect(url)
    try:
        queue = Queue(qname, redis=client, prefix=prefix)
        ledger = CostLedger(client, prefix)
        await ledger.set_price(Price("m", "0.5", "1.5"))
        per_run = 2000 * 500 + 1000 * 1500  # nano: 2,000 in + 1,000 out
        await ledger.set_budget("acme", Budget(hard=amount(10 * per_run), soft=amount(5 * per_run),
                                               estimate=amount(per_run)))
        for i in range(60):
            await queue.add("call", {"ms": 50, "in": 2000, "out": 1000, "model": "m"},
                            group="acme" if i % 3 else "globex")
        procs += start_workers(url, qname, prefix, 3)
        await wait_for(lambda: _completed(queue, 30), timeout=120, what="globex's 20 and acme's 10 completed")
        await wait_for(lambda: _runs(ledger, 30), timeout=60, what="usage recorded")
        calls = int(await client.get(f"test:{{{qname}}}:calls:acme") or 0)
        assert calls == 10
        assert int(await client.get(f"test:{{{qname}}}:calls:globex") or 0) == 20
        state = await ledger.budget("acme")
        assert state["spent_nano"] == 10 * per_run and state["status"] == "hard"
        counts = await queue.counts()
        assert int(counts.get("completed", 0)) == 30
        assert int(counts.get("failed", 0)) == 0
        assert int(counts.get("waiting", 0)) + int(counts.get("delayed", 0)) == 30  # acme's rest wait
        types = sorted(e["type"] for e in await ledger.events())
        assert types == ["budget_hard", "budget_soft"]
        for p in procs:
            assert p.poll() is None, "a worker process died"
        await queue.obliterate(force=True)
    finally:
        await client.aclose()


def amount(nano: int) -> str:
    """Nano-units as a decimal amount of the currency."""
    return f"{nano / 10**9:.9f}"


def start_workers(url: str, queue: str, prefix: str, n: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return [subprocess.Popen([sys.executable, "-m", "tests.costs.cost_worker", url, queue, prefix, "4"],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL) for _ in range(n)]


async def test_a_killed_worker_gives_its_budget_reservation_back_within_a_lease(
    redis_url: str, qname: str, procs: list[subprocess.Popen[bytes]],
) -> None:
    """A run holds its estimate while it runs; SIGKILL its process and the reservation lapses after
    the lease (5 s in cost_worker), so the budget is never held by the dead."""
    prefix = _prefix()
    client = connect(redis_url)
    try:
        queue = Queue(qname, redis=client, prefix=prefix)
        ledger = CostLedger(client, prefix)
        await ledger.set_budget("acme", Budget(hard=1, estimate=1))  # one running run fills it
        await queue.add("call", {"ms": 120_000, "in": 1, "out": 1}, group="acme")
        procs += start_workers(redis_url, qname, prefix, 1)

        async def reserved() -> int:
            return int((await ledger.budget("acme"))["reserved_nano"])

        await wait_for(lambda: _reserved_is(reserved, 10**9), timeout=60, what="the run reserved its estimate")
        assert await ledger.admit("another-run", "acme", 60_000) is not None  # full while it runs
        procs[0].kill()
        procs[0].wait(10)
        await wait_for(lambda: _reserved_is(reserved, 0), timeout=30, what="the reservation lapsed")
        assert await ledger.admit("another-run", "acme", 60_000) is None
        await queue.obliterate(force=True)
    finally:
        await client.aclose()


async def _reserved_is(read: Any, value: int) -> bool:
    return bool(await read() == value)
