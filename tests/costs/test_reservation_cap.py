"""A tenant's live reservations are counted whole: at most 10,000 live at once, so the budget check
(which sums them in one script) never works from a partial sum."""

from __future__ import annotations

import uuid

import pytest

from conveyor.costs import Budget, CostLedger, Price
from conveyor.costs.ledger import MAX_LIVE_RESERVATIONS, RunUsage
from conveyor.redis.connection import RedisClient

UNIT = 10**9  # nano-units of one currency unit


@pytest.fixture
def ledger(client: RedisClient) -> CostLedger:
    return CostLedger(client, prefix=f"cvt{uuid.uuid4().hex[:10]}")


async def _running_runs(ledger: CostLedger, tenant: str, count: int) -> None:
    """What `count` admitted, still running runs of 1 unit each leave in the ledger (their
    reservations, alive for 10 minutes), written directly: admitting them one by one would take
    minutes, each check summing every reservation before it."""
    now_ms = int((await ledger.client.time())[0]) * 1000
    base = ledger.cfg_key.removesuffix("cfg")
    rv, rx = f"{base}rv:{tenant}", f"{base}rx:{tenant}"
    for start in range(0, count, 5000):
        ids = [f"running-{i}" for i in range(start, min(count, start + 5000))]
        await ledger.client.hset(rv, mapping=dict.fromkeys(ids, str(UNIT)))
        await ledger.client.zadd(rx, dict.fromkeys(ids, now_ms + 600_000))


async def test_reservations_past_the_count_bound_do_not_let_a_run_overshoot(ledger: CostLedger) -> None:
    """10,010 running runs hold 10,010 of a 10,005 budget: the next run must wait. Before, only the
    first 10,000 reservations were summed, so the run was admitted and the budget overshot."""
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=10_005, estimate=1))
    await _running_runs(ledger, "acme", MAX_LIVE_RESERVATIONS + 10)
    refusal = await ledger.admit("next", "acme", 60_000)
    assert refusal is not None and refusal.busy
    state = await ledger.budget("acme")
    assert state["running_reservations"] == MAX_LIVE_RESERVATIONS + 10


async def test_a_run_past_the_live_reservation_bound_waits_until_one_ends(ledger: CostLedger) -> None:
    """Whatever room the budget has, a tenant holds at most MAX_LIVE_RESERVATIONS live reservations:
    the next run waits (busy, no attempt used) until a running run is recorded."""
    await ledger.set_price(Price("*", 1, 0))
    await ledger.set_budget("acme", Budget(period="month", hard=1_000_000, estimate=1))
    await _running_runs(ledger, "acme", MAX_LIVE_RESERVATIONS)
    refusal = await ledger.admit("next", "acme", 60_000)
    assert refusal is not None and refusal.busy and refusal.reserved_nano == MAX_LIVE_RESERVATIONS * UNIT
    await ledger.record_runs([RunUsage("running-0", "acme", "t", None)])  # one run ends, reporting nothing
    assert await ledger.admit("next", "acme", 60_000) is None
    state = await ledger.budget("acme")
    assert state["running_reservations"] == MAX_LIVE_RESERVATIONS
    assert state["reserved_nano"] == MAX_LIVE_RESERVATIONS * UNIT
