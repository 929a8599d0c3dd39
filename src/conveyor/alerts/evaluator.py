"""The alert evaluation pass, run by the scheduler as a built-in schedule (`conveyor-alerts`), so one
process of the fleet evaluates each tick, as with any schedule (docs/alerts.md).

A pass first delivers notices a crashed pass left in the outbox, then measures every rule, steps
its state and stores state and notices in one compare-and-set script; only the pass whose write won
enqueues the delivery jobs, then clears them from the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

from redis.exceptions import RedisError

from conveyor.alerts import delivery
from conveyor.alerts.probe import Probe
from conveyor.alerts.rules import RuleBase
from conveyor.alerts.state import AlertState, Notice, step
from conveyor.alerts.store import AlertStore
from conveyor.errors import ConfigurationError, ConveyorError, InvalidScheduleError
from conveyor.redis.clock import redis_now_ms
from conveyor.redis.connection import RedisClient
from conveyor.schedules.model import ALERTS_ID, ScheduleKind
from conveyor.schedules.scheduler import Builtin, builtin_schedule

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 15.0


@dataclass(slots=True)
class PassReport:
    rules: int = 0
    transitions: int = 0
    notices: int = 0
    lost: int = 0  # another evaluator changed the state first
    errors: int = 0


class AlertEvaluator:
    def __init__(self, client: RedisClient, prefix: str = "cv", *, declared: Iterable[RuleBase] = ()) -> None:
        self.client = client
        self.prefix = prefix
        self.store = AlertStore(client, prefix)
        self.declared = list(declared)

    async def sync(self) -> None:
        """Write the rules declared in code (replacing earlier code rules of the same ids)."""
        if self.declared:
            await self.store.put_rules(self.declared, source="code", replace=False)

    async def run(self, now_ms: int | None = None) -> PassReport:
        """One pass. Rule states step at now on the clock of the alert state's node, and each queue is
        measured at now on its own node's (Probe); `now_ms`, when given, is used for both instead
        (a test's made-up time)."""
        # The clock of the node holding the alert state, whose times (since, cleared, notified) it meets.
        now = await redis_now_ms(self.client, self.store.keys.state) if now_ms is None else now_ms
        report = PassReport()
        await self.deliver_pending(report)
        probe = Probe(self.client, self.prefix, now_ms)
        for info in await self.store.all():
            report.rules += 1
            rule, state = info.rule, info.state
            try:
                reading = await rule.measure(probe) if rule.enabled else None
                new_state, notices = step(rule, state, reading, now)
            except (ConveyorError, RedisError, OSError) as exc:
                report.errors += 1
                new_state, notices = replace(state, evaluated_ms=now, error=str(exc)[:300]), []
            except Exception as exc:  # data this version cannot read: this rule fails, the others go on
                logger.exception("alert rule %s: evaluation failed unexpectedly", rule.id)
                report.errors += 1
                error = f"{type(exc).__name__}: {exc}"[:300]
                new_state, notices = replace(state, evaluated_ms=now, error=error), []
            if not await self.store.transition(rule.id, info.version, new_state, notices):
                report.lost += 1
                continue
            report.transitions += 1 if new_state.status != state.status else 0
            for notice in notices:
                await self._deliver(notice, report)
        return report

    async def scheduled_run(self, scheduler_now_ms: int) -> PassReport:
        """The built-in schedule's pass. The scheduler's time is the `{schedules}` node's clock, not
        the alert state's nor the queues' nodes': the pass reads theirs."""
        return await self.run()

    async def deliver_pending(self, report: PassReport) -> None:
        for notice in await self.store.pending_notices():
            await self._deliver(notice, report)

    async def _deliver(self, notice: Notice, report: PassReport) -> None:
        await delivery.enqueue(self.client, self.prefix, notice)
        await self.store.delivered(notice)
        report.notices += 1
        logger.info("alert %s: %s (%s)", notice.rule["id"], notice.kind.value, notice.summary)


def alerts_builtin(
    client: RedisClient, prefix: str, declared: Iterable[RuleBase], interval_s: float = DEFAULT_INTERVAL_S
) -> Builtin:
    """The scheduler's built-in schedule that evaluates alert rules every `interval_s`."""
    evaluator = AlertEvaluator(client, prefix, declared=declared)
    try:
        schedule = builtin_schedule(ALERTS_ID, "conveyor.alerts", interval_s, ScheduleKind.ALERTS)
    except InvalidScheduleError as exc:  # a bad setting, named as the operator set it
        raise ConfigurationError(f"alerts interval (alerts_interval_s, CONVEYOR_ALERTS_INTERVAL_S): {exc}") from None
    return Builtin(schedule, evaluator.scheduled_run, evaluator.sync)


__all__ = ["ALERTS_ID", "AlertEvaluator", "AlertState", "PassReport", "alerts_builtin"]
