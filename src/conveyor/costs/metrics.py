"""Prometheus gauges of the cost ledger, sampled by the service (one ledger read per sample).

Labels are tenants (groups) with usage today or a budget, at most MAX_TENANTS of them (the ledger's
own listing bound), so the number of series stays bounded.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from conveyor.costs.ledger import CostLedger


class CostMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.cost_today = Gauge("conveyor_cost_today", "Cost recorded today (UTC) per tenant, in the currency.",
                                ["group", "currency"], registry=r)
        self.tokens_today = Gauge("conveyor_tokens_today", "Tokens recorded today (UTC) per tenant.",
                                  ["group", "direction"], registry=r)
        self.runs_today = Gauge("conveyor_cost_runs_today", "Runs that reported usage today (UTC) per tenant.",
                                ["group"], registry=r)
        self.budget_spent = Gauge("conveyor_budget_spent", "A tenant's spend in its budget's current period.",
                                  ["group", "period"], registry=r)
        self.budget_limit = Gauge("conveyor_budget_limit", "A tenant's soft and hard budget limits.",
                                  ["group", "kind"], registry=r)
        self.budget_over = Gauge("conveyor_budget_over", "0 within budget, 1 past the soft limit, 2 at the hard one.",
                                 ["group"], registry=r)

    async def sample(self, ledger: CostLedger) -> None:
        today = await ledger.today()
        report = await ledger.usage(since=today, until=today)
        for row in report["groups"]:
            group = row["group"] or ""
            self.cost_today.labels(group, report["currency"]).set(row["cost"])
            self.tokens_today.labels(group, "in").set(row["tokens_in"])
            self.tokens_today.labels(group, "out").set(row["tokens_out"])
            self.runs_today.labels(group).set(row["runs"])
        for budget in await ledger.budgets():
            group = budget["group"]
            self.budget_spent.labels(group, budget["period"]).set(budget["spent"])
            for kind in ("soft", "hard"):
                if budget[kind] is not None:
                    self.budget_limit.labels(group, kind).set(budget[kind])
            self.budget_over.labels(group).set({"ok": 0, "soft": 1, "hard": 2}[budget["status"]])
