"""A run whose lease is lost mid-call (another worker took its job over) still spent what its
provider billed, and its budget reservation belongs to nobody once it has ended: the worker records
the run's usage and gives the reservation back, as for any other run that ended."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from conveyor import JobContext, Queue, Worker
from conveyor.costs import Budget, CostLedger, Price
from conveyor.redis.connection import RedisClient
from tests.conftest import running, wait_for


async def test_a_run_whose_lease_is_lost_is_recorded_and_gives_its_reservation_back(
    client: RedisClient, qname: str,
) -> None:
    """Before, the worker dropped a lost run without telling its cost gate: the usage it reported
    was never recorded, and every heartbeat extended its reservation, so the tenant's budget stayed
    held by a run that had ended, for as long as the worker lived."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    queue = Queue(qname, redis=client, prefix=prefix)
    ledger = CostLedger(client, prefix)
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=10, estimate=5))
    called = asyncio.Event()

    async def call(ctx: JobContext, data: Any) -> None:
        if called.is_set():
            return  # the job's next run (its lease expired and it was recovered): no call this time
        ctx.report_usage(1_000_000, 0)  # the provider billed 1
        called.set()
        await asyncio.Event().wait()  # the answer is still streaming when the lease is lost

    job = await queue.add("call", {}, group="acme")
    worker = Worker(queue, {"call": call}, concurrency=1, costs=True, lease_ms=3000, heartbeat_ms=100)
    async with running(worker):
        await wait_for(called.is_set, timeout=30, what="the run called its provider")
        assert (await ledger.budget("acme"))["reserved_nano"] == 5 * 10**9
        await client.hset(queue.keys.job(job.id), "token", "taken-over")  # another worker has it now
        await wait_for(lambda: worker.stats.lost == 1 and worker.active == 0, timeout=30,
                       what="the run stopped on its lost lease")

        async def settled() -> bool:
            state = await ledger.budget("acme")
            return bool(state["reserved_nano"] == 0 and state["spent_nano"] == 10**9)

        # Three leases' time: a reservation still extended by the heartbeat would be held all along.
        await wait_for(settled, timeout=30, what="the lost run recorded and its reservation given back")
    report = await ledger.usage(group="acme")
    assert report["totals"]["runs"] == 1 and report["totals"]["tokens_in"] == 1_000_000
    await queue.obliterate(force=True)
