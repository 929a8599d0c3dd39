"""The cost gauges the service exports: today's cost and tokens per tenant, budget spend and limits."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest

from conveyor.costs import Budget, CostLedger, Price
from conveyor.costs.metrics import CostMetrics
from conveyor.limits.named import Usage
from conveyor.redis.connection import RedisClient


async def test_cost_gauges_follow_the_ledger(plain_client: RedisClient) -> None:
    ledger = CostLedger(plain_client, f"cvt{uuid.uuid4().hex[:10]}")
    await ledger.set_price(Price("*", 2, 4))
    await ledger.set_budget("acme", Budget(soft="0.001", hard=1, period="month"))
    await ledger.record("r1", "acme", "t", Usage.of(1000, 500))
    await ledger.record("r2", None, "t", Usage.of(10, 0))
    registry = CollectorRegistry()
    metrics = CostMetrics(registry)
    await metrics.sample(ledger)
    text = generate_latest(registry).decode()
    assert 'conveyor_cost_today{currency="USD",group="acme"} 0.004' in text
    assert 'conveyor_tokens_today{direction="in",group="acme"} 1000.0' in text
    assert 'conveyor_tokens_today{direction="in",group=""} 10.0' in text
    assert 'conveyor_cost_runs_today{group="acme"} 1.0' in text
    assert 'conveyor_budget_spent{group="acme",period="month"} 0.004' in text
    assert 'conveyor_budget_limit{group="acme",kind="hard"} 1.0' in text
    assert 'conveyor_budget_over{group="acme"} 1.0' in text
