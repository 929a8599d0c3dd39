"""Cost totals edited by hand (a value that is not an integer) never stop the ledger: a record adds
to them as the core scripts add to `meta` counters (a spoiled total starts again), and reports read
a spoiled total as 0."""

from __future__ import annotations

import uuid

from conveyor.costs import CostLedger, Price
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
