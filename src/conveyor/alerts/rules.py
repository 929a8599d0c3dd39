"""Alert rules: one class per kind, each a validated model with a `measure(probe)` that reads what it
watches and says whether the condition holds.

Adding a kind is adding one class here and naming it in `KINDS` (the API, the app declaration and
the evaluator take it from there). A condition must hold for `for_s` before the alert fires; while
it lasts a notice repeats every `repeat_s`; when it has stayed clear for two evaluations in a row
(and `resolve_s`) a recovery notice goes out.

The models are strict, as `PUT /api/alerts` validates its body with them: a value of another JSON
type than the schema states is refused (the lax mode read `"100"` as a threshold, `1` or `"yes"` as
`enabled`). `parse_rule`, which reads stored rules and `app.alert(...)` declarations, stays lax, so a
rule stored before, or declared in code with `threshold=100.0`, still reads as it did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from conveyor.alerts.channels import Channel
from conveyor.errors import ConfigurationError

if TYPE_CHECKING:
    from conveyor.alerts.probe import Probe

RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
QUEUE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
GROUP = r"^[A-Za-z0-9._:@/+=-]{1,200}$"
MAX_RULES = 200
MAX_WINDOW_S = 86_400.0
DepthState = Literal["waiting", "delayed", "active", "failed"]


def _waiting_only() -> list[DepthState]:
    return ["waiting"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One evaluation: whether the condition holds, the measured value and a line for people."""

    firing: bool
    value: float | None
    summary: str


class RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(pattern=RULE_ID, description="Unique rule id.")
    queue: str = Field(pattern=QUEUE, description="The queue watched.")
    for_s: float = Field(0.0, ge=0, le=MAX_WINDOW_S, description="Seconds the condition must hold before firing.")
    resolve_s: float = Field(
        0.0, ge=0, le=MAX_WINDOW_S,
        description="Seconds the condition must stay clear before a firing alert resolves (at least one "
                    "evaluation interval: a resolve needs two clear evaluations in a row).",
    )
    repeat_s: float | None = Field(
        3600.0, ge=1, le=7 * MAX_WINDOW_S, description="Seconds between repeats while firing (null: never)."
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    channels: list[Channel] = Field(min_length=1, max_length=10)
    description: str = Field("", max_length=500)
    enabled: bool = True

    async def measure(self, probe: Probe) -> Reading:
        raise NotImplementedError


class QueueDepth(RuleBase):
    """More than `threshold` jobs in the given states (waiting by default)."""

    kind: Literal["queue_depth"]
    threshold: int = Field(ge=0, le=10**12)
    states: list[DepthState] = Field(default_factory=_waiting_only, min_length=1, max_length=4)

    async def measure(self, probe: Probe) -> Reading:
        counts = await probe.counts(self.queue)
        n = sum(counts[s] for s in set(self.states))
        return Reading(n > self.threshold, n, f"{n} {'+'.join(self.states)} jobs in {self.queue} "
                       f"(threshold {self.threshold})")


class OldestWaiting(RuleBase):
    """The job at the head of the waiting list has waited more than `threshold_s`."""

    kind: Literal["oldest_waiting"]
    threshold_s: float = Field(gt=0, le=30 * MAX_WINDOW_S)

    async def measure(self, probe: Probe) -> Reading:
        age_ms = await probe.oldest_waiting_ms(self.queue)
        age = None if age_ms is None else age_ms / 1000
        return Reading(age is not None and age > self.threshold_s, age,
                       f"oldest waiting job in {self.queue} has waited {0 if age is None else round(age, 1)} s "
                       f"(threshold {self.threshold_s:g} s)")


class FailureRate(RuleBase):
    """Of the jobs that finished in the last `window_s`, more than `threshold` (a fraction) failed,
    once at least `min_jobs` finished (counted in the finished sets by finish time)."""

    kind: Literal["failure_rate"]
    threshold: float = Field(gt=0, le=1)
    window_s: float = Field(300.0, ge=10, le=MAX_WINDOW_S)
    min_jobs: int = Field(10, ge=1, le=10**9)

    async def measure(self, probe: Probe) -> Reading:
        completed, failed = await probe.finished(self.queue, self.window_s)
        total = completed + failed
        rate = failed / total if total else 0.0
        return Reading(total >= self.min_jobs and rate > self.threshold, round(rate, 4),
                       f"{failed} of {total} jobs failed in {self.queue} over {self.window_s:g} s "
                       f"({rate:.0%}; threshold {self.threshold:.0%})")


class StalledJobs(RuleBase):
    """More than `threshold` jobs stalled (their worker stopped renewing the lease) in `window_s`."""

    kind: Literal["stalled_jobs"]
    threshold: int = Field(0, ge=0, le=10**9)
    window_s: float = Field(300.0, ge=10, le=MAX_WINDOW_S)

    async def measure(self, probe: Probe) -> Reading:
        n, complete = await probe.stalled(self.queue, self.window_s)
        more = "" if complete else " or more"
        return Reading(n > self.threshold, n, f"{n}{more} jobs stalled in {self.queue} over {self.window_s:g} s "
                       f"(threshold {self.threshold})")


class NoWorker(RuleBase):
    """No live worker process serves the queue (from the worker registry)."""

    kind: Literal["no_worker"]

    async def measure(self, probe: Probe) -> Reading:
        n = await probe.workers_serving(self.queue)
        return Reading(n == 0, n, f"{n} live workers serve {self.queue}")


class Budget(RuleBase):
    """A cost budget (docs/limits.md) is spent: the queue's cost limiter, or one group's (a tenant),
    has fewer than `min_tokens` units left."""

    kind: Literal["budget"]
    group: str | None = Field(None, pattern=GROUP, description="A tenant's group; none: the queue's budget.")
    min_tokens: float = Field(1.0, ge=-(10**15), le=10**15)

    async def measure(self, probe: Probe) -> Reading:
        limiter = await probe.limiter(self.queue, self.group, "cost")
        who = f"group {self.group} of {self.queue}" if self.group else self.queue
        if limiter is None:
            return Reading(False, None, f"{who} has no cost limit")
        tokens = float(limiter["tokens"])
        return Reading(tokens < self.min_tokens, tokens,
                       f"cost budget of {who}: {tokens:g} units left (alert below {self.min_tokens:g})")


class TenantBudget(RuleBase):
    """A tenant's spend in its budget's current period (conveyor.costs) reached the budget's soft
    limit, or its hard limit with `at="hard"`."""

    kind: Literal["tenant_budget"]
    queue: str = Field("costs", pattern=QUEUE, description="Not used: tenant budgets are fleet-wide.")
    group: str = Field(pattern=GROUP, description="The tenant (the jobs' group).")
    at: Literal["soft", "hard"] = "soft"

    async def measure(self, probe: Probe) -> Reading:
        budget = await probe.budget(self.group)
        if budget is None:
            return Reading(False, None, f"tenant {self.group} has no budget")
        spent, limit = float(budget["spent"]), budget[self.at]
        if limit is None:
            return Reading(False, spent, f"the budget of tenant {self.group} has no {self.at} limit")
        return Reading(spent >= limit, spent, f"tenant {self.group} spent {spent:g} {budget['currency']} this "
                       f"{budget['period']} ({self.at} limit {limit:g})")


class LimiterStuck(RuleBase):
    """Jobs wait, the queue is not paused, a limit holds them back (a rate or cost limiter out of
    tokens, the concurrency cap full, an upstream block, or every group parked or capped) and no job
    of the queue finished in the last `window_s`."""

    kind: Literal["limiter_stuck"]
    window_s: float = Field(600.0, ge=10, le=MAX_WINDOW_S)

    async def measure(self, probe: Probe) -> Reading:
        state = await probe.limits(self.queue)
        waiting = int(state["waiting"]["ungrouped"]) + int(state["waiting"]["grouped"])
        closed = _closed_limits(state)
        completed, failed = await probe.finished(self.queue, self.window_s)
        stuck = waiting > 0 and not state["paused"] and bool(closed) and completed + failed == 0
        what = ", ".join(closed) or "no limit closed"
        return Reading(stuck, waiting, f"{waiting} jobs wait in {self.queue}; {what}; "
                       f"{completed + failed} finished in {self.window_s:g} s")


def _closed_limits(state: dict[str, Any]) -> list[str]:
    closed = [f"{name} limiter has {lim['tokens']:g} tokens" for name in ("rate", "cost")
              if (lim := state.get(name)) is not None and lim["tokens"] < 1]
    conc = state.get("concurrency")
    if conc and conc["active"] >= conc["limit"]:
        closed.append(f"concurrency cap full ({conc['active']}/{conc['limit']})")
    if state.get("blocked_until_ms"):
        closed.append("blocked by upstream backpressure")
    groups = state["groups"]
    if int(state["waiting"]["grouped"]) > 0 and groups["ready"] == 0 and groups["parked"] + groups["capped"] > 0:
        closed.append("every group with waiting jobs is parked or capped")
    return closed


KINDS = (QueueDepth, OldestWaiting, FailureRate, StalledJobs, NoWorker, Budget, TenantBudget, LimiterStuck)
Rule = Annotated[
    QueueDepth | OldestWaiting | FailureRate | StalledJobs | NoWorker | Budget | TenantBudget | LimiterStuck,
    Field(discriminator="kind"),
]
RULE: TypeAdapter[Rule] = TypeAdapter(Rule)
RULE_LIST: TypeAdapter[list[Rule]] = TypeAdapter(list[Rule])
KIND_NAMES = tuple(k.model_fields["kind"].annotation.__args__[0] for k in KINDS)  # type: ignore[union-attr]


def parse_rule(value: Any) -> RuleBase:
    """A rule from JSON-ready data (lax: a stored rule or a code declaration, see above);
    ConfigurationError naming each invalid field."""
    try:
        rule: RuleBase = RULE.validate_python(value, strict=False)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in _field(e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False, include_input=False))
        raise ConfigurationError(f"invalid alert rule: {problems}") from None
    return rule


def _field(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return loc[1:] if loc and loc[0] in KIND_NAMES else loc


def rule_json(rule: RuleBase) -> dict[str, Any]:
    return rule.model_dump(mode="json")
