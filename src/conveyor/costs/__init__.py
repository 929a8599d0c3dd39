"""Cost accounting per tenant: tokens and cost per group, task and day from the usage runs report,
and budgets per day or month with a soft limit (an event, an alert) and a hard limit (runs wait for
the next period, or fail), fleet-wide (docs/llm.md, "Cost per tenant")."""

from conveyor.costs.ledger import CostLedger, RunUsage
from conveyor.costs.model import Admission, Budget, BudgetExceededError, Price, UnknownTenantError

__all__ = ["Admission", "Budget", "BudgetExceededError", "CostLedger", "Price", "RunUsage", "UnknownTenantError"]
