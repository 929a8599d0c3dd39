"""Cost totals edited by hand (a value that is not an integer) never stop the ledger: a record adds
to them as the core scripts add to `meta` counters (a spoiled total starts again), and reports read
a spoiled total as 0."""

from __future__ import annotations

import uuid

import pytest

from conveyor.costs import Budget, CostLedger, Price
from conveyor.errors import ConfigurationError
from conveyor.limits.named import Usage
from conveyor.redis.connection import RedisClient


async def test_a_spoiled_total_never_stops_recording(client: RedisClient) -> None:
    """Before, cost-record-1 added to the day's and the month's totals with a plain HINCRBY: one
    total edited to a non-integer made every record of that tenant fail (the worker's usage was lost
    and its budget reservation never given back), and the usage report raised on it."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    ledger = CostLedger(client, prefix=prefix)
    try:
        await ledger.set_price(Price("*", 1, 1))
        await ledger.record("run-1", "acme", "t", Usage.of(1000, 1000, "m"))
        await ledger.record("run-2", "acme", "u", Usage.of(1000, 1000, "m"))
        keys = [k async for k in client.scan_iter(match=f"{prefix}:{{costs}}:[dm]:*")]
        assert len(keys) == 2
        for key in keys:
            fields = await client.hkeys(key)
            await client.hset(key, mapping=dict.fromkeys(fields, "garbage"))
        assert await ledger.record("run-3", "acme", "t", Usage.of(1000, 1000, "m")) > 0
        report = await ledger.usage(group="acme")
        rows = {r["task"]: r for r in report["rows"]}
        assert rows["t"]["runs"] == 1 and rows["t"]["tokens_in"] == 1000  # started again
        assert rows["u"]["runs"] == 0  # spoiled and not added to since: read as 0
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)


@pytest.mark.parametrize("spoiled", ["nan", "-nan", "inf", "1e400", "-1000000000", "1e20", "0x10", "2.5", "garbage"])
async def test_a_spoiled_price_or_retention_never_spoils_a_record(client: RedisClient, spoiled: str) -> None:
    """A price or the retention edited by hand into something no price or retention can be counts as
    not set (the default price, then 0; 90 days). Before, a 'nan' price wrote 'nan' into the totals
    and answered a negative cost, a negative price took money off the totals, a 'nan' retention
    failed the record after it had counted the tokens (every later record failing the same way), and
    a negative retention expired the tenant's day and month buckets at once."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    ledger = CostLedger(client, prefix=prefix)
    cfg = f"{prefix}:{{costs}}:cfg"
    try:
        await ledger.set_price(Price("*", 1, 1))
        await ledger.set_price(Price("m", 2, 2))
        assert await ledger.record("run-1", "acme", "t", Usage.of(1000, 1000, "m")) == 4_000_000
        await client.hset(cfg, mapping={"pi:m": spoiled, "retention_days": spoiled})
        # pi:m cannot be read: the default price (pi:*) prices the tokens in; po:m still prices those out.
        assert await ledger.record("run-2", "acme", "t", Usage.of(1000, 1000, "m")) == 3_000_000
        await client.hset(cfg, "pi:*", spoiled)  # no price for tokens in at all: they cost 0
        assert await ledger.record("run-3", "acme", "t", Usage.of(1000, 1000, "m")) == 2_000_000
        buckets = [k async for k in client.scan_iter(match=f"{prefix}:{{costs}}:[dm]:*")]
        assert len(buckets) == 2, "the day's and the month's bucket are kept"
        for key in buckets:
            assert await client.pttl(key) > 80 * 86_400_000, "kept for the default retention"
            values = await client.hgetall(key)
            assert all(v.isdigit() for v in values.values()), values
        report = await ledger.usage(group="acme")
        assert report["totals"]["runs"] == 3 and report["totals"]["cost_nano"] == 9_000_000
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)


@pytest.mark.parametrize("spoiled", ["nan", "inf", "-5000000000", "2.5", "garbage"])
async def test_spoiled_budget_values_are_read_as_the_records_count_them(client: RedisClient, spoiled: str) -> None:
    """A spend total, a reservation or a budget's limit edited by hand into something it cannot be is
    read by one rule everywhere: a total or reservation counts as 0 (as reports and the next record
    count it), a limit as not set. Before, the budget check read 'nan' and 'inf' as numbers (a nan
    reservation let runs past the ones holding the budget, a nan limit admitted every run), and the
    budgets listing (the API, the CLI, the service's /metrics) raised on any such value, for every
    tenant."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    ledger = CostLedger(client, prefix=prefix)
    base = f"{prefix}:{{costs}}:"
    try:
        await ledger.set_price(Price("*", 1, 0))
        await ledger.set_budget("acme", Budget(period="month", soft=1, hard=2, estimate=1))
        await ledger.set_budget("globex", Budget(hard=5))
        await ledger.record("run-1", "acme", "t", Usage.of(1_000_000, 0))  # spent 1
        assert await ledger.admit("running", "acme", 60_000) is None  # reserves 1: the budget is full
        held = await ledger.admit("next", "acme", 60_000)
        assert held is not None and held.busy
        await client.hset(base + "rv:acme", "running", spoiled)  # the reservation counts 0
        assert await ledger.admit("next", "acme", 60_000) is None
        rows = {b["group"]: b for b in await ledger.budgets()}
        assert rows["acme"]["reserved_nano"] == 10**9 and rows["acme"]["spent_nano"] == 10**9  # "next" only
        [month] = [k async for k in client.scan_iter(match=base + "m:*")]
        await client.hset(month, "c", spoiled)  # the spend counts 0, as in reports
        for field in ("soft", "est", "cfg"):
            await client.hset(base + "b:acme", field, spoiled)
        await client.hset(base + "b:globex", "hard", spoiled)  # no hard limit
        rows = {b["group"]: b for b in await ledger.budgets()}
        assert rows["acme"]["spent_nano"] == 0 and rows["acme"]["soft"] is None and rows["acme"]["hard"] == 2
        assert rows["acme"]["estimate"] == 0 and rows["acme"]["status"] == "ok"
        assert rows["globex"]["hard"] is None and rows["globex"]["status"] == "ok"
        assert await ledger.admit("third", "acme", 60_000) is None  # 0 spent + 1 reserved, no estimate
        assert (await ledger.budget("acme"))["reserved_nano"] == 10**9
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)


async def test_a_name_edited_into_the_budgets_set_never_stops_the_listing(client: RedisClient) -> None:
    """The budgets listing reads tenant names back from Redis: one written there by hand that no
    tenant can have (a space, a newline, 300 characters) is skipped with a warning, and every real
    budget is still listed. Before, the listing raised ConfigurationError on it (a bare 500 from
    `GET /api/budgets`, and `conveyor budgets` failed whole)."""
    prefix = f"cvt{uuid.uuid4().hex[:10]}"
    ledger = CostLedger(client, prefix=prefix)
    try:
        await ledger.set_budget("acme", Budget(hard=10))
        await client.sadd(ledger.keys.budgets, "not a tenant", "x" * 300, "line\nbreak")
        rows = await ledger.budgets()
        assert [row["group"] for row in rows] == ["acme"]
        with pytest.raises(ConfigurationError):  # a name the caller gives is still checked
            await ledger.budgets(["not a tenant"])
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
