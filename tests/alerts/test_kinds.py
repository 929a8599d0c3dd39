"""Each rule kind measured against a real Redis: the condition holds exactly when it should."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conveyor import Queue
from conveyor.alerts import parse_rule
from conveyor.alerts.probe import Probe
from conveyor.limits import RateLimit
from conveyor.redis.connection import RedisClient
from conveyor.service.registry import RegistryWriter
from tests.conftest import wait_for

CH = [{"type": "email", "to": ["ops@example.com"]}]


def rule(kind: str, queue: str, **params: Any) -> Any:
    return parse_rule({"kind": kind, "id": "r", "queue": queue, "channels": CH, **params})


async def probe(client: RedisClient, prefix: str) -> Probe:
    sec, usec = await client.time()
    return Probe(client, prefix, int(sec) * 1000 + int(usec) // 1000)


@pytest.fixture
async def q(rclient: RedisClient, prefix: str) -> AsyncIterator[Queue]:
    queue = Queue("watched", redis=rclient, prefix=prefix)
    yield queue
    await queue.obliterate(force=True)


async def test_queue_depth_and_oldest_waiting(rclient: RedisClient, prefix: str, q: Queue) -> None:
    depth = rule("queue_depth", q.name, threshold=2)
    assert not (await depth.measure(await probe(rclient, prefix))).firing
    for i in range(3):
        await q.add("job", {"i": i})
    await q.add("later", {}, delay=3600)
    reading = await depth.measure(await probe(rclient, prefix))
    assert reading.firing and reading.value == 3
    both = rule("queue_depth", q.name, threshold=3, states=["waiting", "delayed"])
    assert (await both.measure(await probe(rclient, prefix))).value == 4
    oldest = rule("oldest_waiting", q.name, threshold_s=3600)
    reading = await oldest.measure(await probe(rclient, prefix))
    assert not reading.firing and reading.value is not None and reading.value < 3600
    p = await probe(rclient, prefix)
    later = Probe(rclient, prefix, p.now_ms + 3_601_000)  # an hour on: the head has waited too long
    assert (await oldest.measure(later)).firing


async def test_failure_rate_counts_jobs_finished_in_the_window(rclient: RedisClient, prefix: str, q: Queue) -> None:
    from conveyor import Worker

    async def ok(ctx: Any, data: Any) -> None:
        return None

    async def bad(ctx: Any, data: Any) -> None:
        raise RuntimeError("nope")

    for i in range(10):
        await q.add("bad" if i < 4 else "ok", {})
    worker = Worker(q, {"ok": ok, "bad": bad}, lease_ms=5000, idle_block_s=0.5)
    await worker.start()
    try:
        await wait_for(lambda: _finished(q, 10), what="ten jobs finished")
    finally:
        await worker.close(2.0)
    p = await probe(rclient, prefix)
    assert (await rule("failure_rate", q.name, threshold=0.3, min_jobs=10).measure(p)).firing  # 40 % > 30 %
    assert not (await rule("failure_rate", q.name, threshold=0.5, min_jobs=10).measure(p)).firing
    assert not (await rule("failure_rate", q.name, threshold=0.3, min_jobs=11).measure(p)).firing
    reading = await rule("failure_rate", q.name, threshold=0.3, min_jobs=10).measure(p)
    assert reading.value == 0.4


async def _finished(q: Queue, n: int) -> bool:
    c = await q.counts()
    return c["completed"] + c["failed"] == n


async def test_stalled_jobs_are_counted_from_the_event_stream(rclient: RedisClient, prefix: str, q: Queue) -> None:
    stalled = rule("stalled_jobs", q.name, threshold=0, window_s=300)
    await q.add("job", {})
    assert not (await stalled.measure(await probe(rclient, prefix))).firing
    await q.scripts.claim("lost-worker", 1, 1)  # a worker that leases for 1 ms and vanishes

    async def recovered() -> bool:
        return (await q.recover_stalled(max_stalls=5))[0] == 1

    await wait_for(recovered, what="the stalled sweep recovered the job")
    reading = await stalled.measure(await probe(rclient, prefix))
    assert reading.firing and reading.value == 1


async def test_no_worker_reads_the_registry(rclient: RedisClient, prefix: str, q: Queue) -> None:
    nobody = rule("no_worker", q.name)
    assert (await nobody.measure(await probe(rclient, prefix))).firing
    writer = RegistryWriter(rclient, prefix, "w1", lambda: {"id": "w1", "queues": [q.name]}, 5.0)
    await writer.beat()
    try:
        reading = await nobody.measure(await probe(rclient, prefix))
        assert not reading.firing and reading.value == 1
        other = rule("no_worker", "another-queue")
        assert (await other.measure(await probe(rclient, prefix))).firing
    finally:
        await writer.remove()


async def test_budget_of_the_queue_and_of_a_tenant(rclient: RedisClient, prefix: str, q: Queue) -> None:
    queue_budget = rule("budget", q.name, min_tokens=1)
    tenant = rule("budget", q.name, group="tenant-a", min_tokens=1)
    no_limit = await queue_budget.measure(await probe(rclient, prefix))
    assert not no_limit.firing and no_limit.value is None
    await q.set_limits(cost=RateLimit(100, per_s=3600))
    await q.set_group_limits("tenant-a", cost=RateLimit(10, per_s=3600))
    fresh = await tenant.measure(await probe(rclient, prefix))
    assert not fresh.firing and fresh.value == 1.0  # a rested limiter: burst 0 + 1 unit
    await q.add("expensive", {}, group="tenant-a", cost=10)
    await q.scripts.claim("w", 60_000, 1)  # the claim charges 10 units to the tenant and the queue
    spent = await tenant.measure(await probe(rclient, prefix))
    assert spent.firing and spent.value is not None and spent.value < 1
    assert (await queue_budget.measure(await probe(rclient, prefix))).firing


async def test_limiter_stuck_needs_waiting_jobs_a_closed_limit_and_no_progress(
    rclient: RedisClient, prefix: str, q: Queue
) -> None:
    stuck = rule("limiter_stuck", q.name, window_s=600)
    await q.set_limits(rate=RateLimit(1, per_s=3600))
    await q.add("a", {})
    await q.add("b", {})
    assert not (await stuck.measure(await probe(rclient, prefix))).firing  # a token is left
    await q.scripts.claim("w", 60_000, 2)  # takes the one token: the second job must wait an hour
    reading = await stuck.measure(await probe(rclient, prefix))
    assert reading.firing and reading.value == 1 and "rate limiter" in reading.summary
    await q.pause()
    assert not (await stuck.measure(await probe(rclient, prefix))).firing  # paused on purpose


async def test_tenant_budget_fires_at_the_soft_or_hard_limit(rclient: RedisClient, prefix: str) -> None:
    from conveyor.costs import Budget, CostLedger, Price
    from conveyor.limits.named import Usage

    ledger = CostLedger(rclient, prefix)
    await ledger.set_price(Price("*", 1, 0))
    soft = parse_rule({"kind": "tenant_budget", "id": "s", "group": "acme", "channels": CH})
    hard = parse_rule({"kind": "tenant_budget", "id": "h", "group": "acme", "at": "hard", "channels": CH})
    none = await soft.measure(await probe(rclient, prefix))
    assert not none.firing and none.value is None
    await ledger.set_budget("acme", Budget(soft="0.001", hard="0.002"))
    assert not (await soft.measure(await probe(rclient, prefix))).firing
    await ledger.record("r1", "acme", "t", Usage.of(1000, 0))
    reading = await soft.measure(await probe(rclient, prefix))
    assert reading.firing and reading.value == 0.001 and "acme" in reading.summary
    assert not (await hard.measure(await probe(rclient, prefix))).firing
    await ledger.record("r2", "acme", "t", Usage.of(1000, 0))
    assert (await hard.measure(await probe(rclient, prefix))).firing
