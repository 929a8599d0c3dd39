"""Alerts: rules on queues (depth, oldest waiting age, failure rate, stalled jobs, no live worker,
cost budgets, a stuck limiter) evaluated once per tick across the fleet by the scheduler, delivered
through the built-in webhook and email handlers (docs/alerts.md)."""

from conveyor.alerts.rules import KIND_NAMES, KINDS, Reading, Rule, RuleBase, parse_rule
from conveyor.alerts.state import AlertState, Notice, NoticeKind, Status
from conveyor.alerts.store import AlertInfo, AlertStore, RuleConflictError

__all__ = [
    "KINDS", "KIND_NAMES", "AlertInfo", "AlertState", "AlertStore", "Notice", "NoticeKind", "Reading", "Rule",
    "RuleBase", "RuleConflictError", "Status", "parse_rule",
]
