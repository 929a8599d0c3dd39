"""Faults on the way to the cost ledger: a record whose reply is lost is sent again (by the next trip
or the heartbeat) and counted once; a run never costs twice and never goes missing."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from conveyor import JobContext, Queue, Worker
from conveyor.costs import CostLedger, Price
from conveyor.costs.ledger import _S as LEDGER_SCRIPTS
from conveyor.limits.named import Usage
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.conftest import running, wait_for
from tests.proxy import TcpProxy


@pytest.mark.parametrize("lost", [1, 3])  # 3: the last run's record, which only the heartbeat sends again
async def test_a_record_whose_reply_is_lost_is_counted_once(redis_server: RedisServer, qname: str,
                                                           lost: int) -> None:
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    direct = connect(redis_server.url)
    ledger = CostLedger(direct, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.record("warm-up", "other", "t", Usage.of(1, 0))  # the script is in the server's cache
    with TcpProxy(redis_server.port) as proxy:
        client = connect(proxy.url)
        queue = Queue(qname, redis=client, prefix=prefix)

        async def call(ctx: JobContext, data: Any) -> None:
            ctx.report_usage(1000, 0)

        proxy.lose_reply(LEDGER_SCRIPTS["cost-record"].sha.encode(), (lost,))  # runs, its reply is lost
        for _ in range(3):
            await queue.add("call", {}, group="acme")
        async with running(Worker(queue, {"call": call}, concurrency=1, costs=True, lease_ms=3000)):
            await wait_for(lambda: _runs(ledger, 3), timeout=60, what="three runs recorded")
            # A run's usage is recorded as it ends, beside (not inside) the trip that records its outcome.
            await wait_for(lambda: _completed(Queue(qname, redis=direct, prefix=prefix), 3), timeout=60,
                           what="three jobs completed")
            report = await ledger.usage(group="acme")
        assert proxy.cuts == 1  # that record ran on the server and its reply was lost
        assert report["totals"]["runs"] == 3 and report["totals"]["tokens_in"] == 3000
        assert report["totals"]["cost_nano"] == 3 * 1_000_000
        await Queue(qname, redis=direct, prefix=prefix).obliterate(force=True)
        await client.aclose()
    await direct.aclose()


async def _completed(queue: Queue, n: int) -> bool:
    return int((await queue.counts())["completed"]) == n


async def _runs(ledger: CostLedger, n: int) -> bool:
    try:
        report = await ledger.usage(group="acme")
    except LookupError:
        return False
    return int(report["totals"]["runs"]) >= n


async def test_an_admission_whose_reply_is_lost_does_not_hold_the_budget(redis_server: RedisServer,
                                                                        qname: str) -> None:
    """The budget check ran on the server (reserving the run's estimate) and its reply was lost: the
    job goes back for a second, and that reservation must not count against the tenant when the job
    comes back, or a budget with room for one run refuses it until the next period."""
    from conveyor.costs import Budget

    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    direct = connect(redis_server.url)
    ledger = CostLedger(direct, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=2, estimate="1.5", on_hard="wait"))
    assert await ledger.admit("warm-up", "other", 1000) is None  # the script is in the server's cache
    with TcpProxy(redis_server.port) as proxy:
        client = connect(proxy.url)
        queue = Queue(qname, redis=client, prefix=prefix)

        async def call(ctx: JobContext, data: Any) -> None:
            ctx.report_usage(1_000_000, 0)  # costs 1

        proxy.lose_reply(LEDGER_SCRIPTS["cost-admit"].sha.encode(), (1,))  # runs, its reply is lost
        await queue.add("call", {}, group="acme")
        async with running(Worker(queue, {"call": call}, concurrency=1, costs=True, lease_ms=30_000)):
            await wait_for(lambda: _completed(Queue(qname, redis=direct, prefix=prefix), 1), timeout=60,
                           what="the job ran once its budget check went through")
        assert proxy.cuts == 1
        state = await ledger.budget("acme")
        assert state["spent"] == 1 and state["reserved"] == 0
        await Queue(qname, redis=direct, prefix=prefix).obliterate(force=True)
        await client.aclose()
    await direct.aclose()
