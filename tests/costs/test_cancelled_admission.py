"""A run cancelled while its budget check is on the way: the check may have reserved the run's
estimate on the server, and the worker must give that reservation back as the run ends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from conveyor import JobContext, JobState, Queue, Worker
from conveyor.costs import Budget, CostLedger, Price
from conveyor.costs.ledger import _S as LEDGER_SCRIPTS
from conveyor.redis.connection import connect
from conveyor.testing import RedisServer
from tests.conftest import running, wait_for
from tests.proxy import TcpProxy


async def test_a_run_cancelled_during_its_budget_check_gives_the_reservation_back(
    redis_server: RedisServer, qname: str,
) -> None:
    """The check ran on the server (reserving 5 of the tenant's 10) and its reply is late; the job
    is cancelled meanwhile. Before, the worker had not yet noted the run as holding a reservation,
    so it ended without giving it back and the budget stayed held for the rest of the lease (60 s
    here): no other run of the tenant that needed the room was admitted."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    direct = connect(redis_server.url)
    ledger = CostLedger(direct, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=10, estimate=5))
    assert await ledger.admit("warm-up", "other", 1000) is None  # the script is in the server's cache
    ran = asyncio.Event()

    async def call(ctx: JobContext, data: Any) -> None:
        ran.set()

    with TcpProxy(redis_server.port) as proxy:
        client = connect(proxy.url)
        queue = Queue(qname, redis=client, prefix=prefix)
        proxy.hold_reply(LEDGER_SCRIPTS["cost-admit"].sha.encode())
        job = await queue.add("call", {}, group="acme")
        async with running(Worker(queue, {"call": call}, concurrency=1, costs=True, lease_ms=60_000,
                                  heartbeat_ms=100)):

            async def reserved(nano: int) -> bool:
                return int((await ledger.budget("acme"))["reserved_nano"]) == nano

            await wait_for(lambda: reserved(5 * 10**9), timeout=30, what="the check reserved the estimate")
            assert proxy.held == 1
            await job.cancel()

            async def cancelled() -> bool:
                return await Queue(qname, redis=direct, prefix=prefix).get_state(job.id) == JobState.CANCELLED

            await wait_for(cancelled, timeout=30, what="the job cancelled while its check was on the way")
            await wait_for(lambda: reserved(0), timeout=30, what="the reservation given back")
            proxy.release()
        assert not ran.is_set()
        await Queue(qname, redis=direct, prefix=prefix).obliterate(force=True)
        await client.aclose()
    await direct.aclose()
