"""The ledger tells estimated usage apart: a run charged an estimate (a provider that billed without
reporting, e.g. a stream cut short) adds its estimated tokens and counts as a run with an estimate,
per day, tenant and task, shown by `ledger.usage`, GET /api/costs and `conveyor costs`."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from conveyor.costs import CostLedger, Price
from conveyor.errors import UsageReportError
from conveyor.limits.named import Usage
from conveyor.redis.connection import RedisClient
from tests.cli.run import ok


@pytest.fixture
def ledger(client: RedisClient) -> CostLedger:
    return CostLedger(client, prefix=f"cvt{uuid.uuid4().hex[:10]}")


async def test_estimated_tokens_and_runs_are_summed_beside_the_totals(ledger: CostLedger) -> None:
    """Before, the ledger kept no trace of which figures were estimates."""
    await ledger.set_price(Price("*", 1, 2))
    await ledger.record("run-1", "acme", "ai.generate", Usage.of(100, 50, "m"))
    await ledger.record("run-2", "acme", "ai.generate", Usage.of(25, 10, "m", estimated=True))
    mixed = Usage.of(10, 5, "m").plus(Usage.of(25, 0, "m", estimated=True))  # one call reported, one estimated
    assert mixed.estimated == 25
    await ledger.record("run-3", "acme", "ai.generate", mixed)
    await ledger.record("run-4", "acme", "summarise", Usage.of(7, 0))
    report = await ledger.usage(group="acme")
    rows = {r["task"]: r for r in report["rows"]}
    assert rows["ai.generate"]["tokens_in"] == 160 and rows["ai.generate"]["tokens_out"] == 65
    assert rows["ai.generate"]["tokens_estimated"] == 60 and rows["ai.generate"]["runs_estimated"] == 2
    assert rows["summarise"]["tokens_estimated"] == 0 and rows["summarise"]["runs_estimated"] == 0
    assert report["totals"]["tokens_estimated"] == 60 and report["totals"]["runs_estimated"] == 2
    assert report["totals"]["runs"] == 4  # the existing fields as before
    assert report["groups"] == [{"group": "acme", **report["totals"]}]


def test_an_estimate_cannot_pass_the_tokens_it_is_part_of() -> None:
    with pytest.raises(UsageReportError):
        Usage(10, 5, estimated=16)
    with pytest.raises(UsageReportError):
        Usage(10, 5, estimated=-1)


async def test_the_cli_shows_the_estimated_part(plain_client: RedisClient, redis_url: str) -> None:
    prefix = f"cli{uuid.uuid4().hex[:10]}"
    ledger = CostLedger(plain_client, prefix)
    await ledger.record("r1", "acme", "ai.generate", Usage.of(1000, 1000, "gpt-x"))
    await ledger.record("r2", "acme", "ai.generate", Usage.of(40, 12, "gpt-x", estimated=True))
    text = await asyncio.to_thread(ok, "costs", "--prefix", prefix, redis_url=redis_url)
    header = next(line for line in text.splitlines() if "tokens in" in line)
    assert "estimated" in header
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert "52 (1 run)" in total
