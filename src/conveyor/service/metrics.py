"""Prometheus metrics of one service process: a job middleware plus gauges sampled periodically.

Each service owns its own CollectorRegistry (no module-level state), rendered by GET /metrics.
Job-name labels are limited to the names the queue declares, so odd job names cannot grow the series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conveyor.app import HeldThreads
from conveyor.costs.metrics import CostMetrics
from conveyor.job import JobState
from conveyor.middleware import Middleware
from conveyor.worker import JobContext, JobOutcome, OutcomeKind

OTHER_NAME = "_other"
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every instrument of the service, in one registry."""

    def __init__(self, known_names: Mapping[str, Iterable[str]]) -> None:
        self.known_names = {q: frozenset(names) for q, names in known_names.items()}
        r = self.registry = CollectorRegistry()
        self.duration = Histogram(
            "conveyor_job_duration_seconds",
            "Handler run time per job run.",
            ["queue", "name"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        per_job = ["queue", "name"]
        self.completed = Counter("conveyor_jobs_completed", "Job runs that completed.", per_job, registry=r)
        self.failed = Counter("conveyor_jobs_failed", "Jobs that failed for good.", per_job, registry=r)
        self.retried = Counter(
            "conveyor_jobs_retried", "Job runs that failed and will retry.", per_job, registry=r
        )
        self.cancelled = Counter(
            "conveyor_jobs_cancelled", "Job runs cancelled on request.", per_job, registry=r
        )
        self.returned = Counter(
            "conveyor_jobs_returned", "Job runs handed back without using an attempt.", per_job, registry=r
        )
        self.active = Gauge(
            "conveyor_jobs_active", "Jobs running now in this process.", ["queue"], registry=r
        )
        self.peak_active = Gauge(
            "conveyor_jobs_peak_active", "Most jobs run at once since start.", ["queue"], registry=r
        )
        self.concurrency = Gauge(
            "conveyor_queue_concurrency", "Concurrency limit of this process.", ["queue"], registry=r
        )
        self.depth = Gauge(
            "conveyor_queue_depth", "Jobs in the queue per state (sampled).", ["queue", "state"], registry=r
        )
        self.paused = Gauge(
            "conveyor_queue_paused", "1 while the queue's paused flag is set.", ["queue"], registry=r
        )
        self.loop_up = Gauge(
            "conveyor_queue_loop_up", "1 while every loop of the queue's worker runs.", ["queue"], registry=r
        )
        self.loop_restarts = Counter(
            "conveyor_queue_loop_restarts", "Crashed queue loops restarted.", ["queue", "loop"], registry=r
        )
        self.limit_tokens = Gauge(
            "conveyor_limit_tokens", "Units left in a queue-wide rate or cost limit (sampled).",
            ["queue", "limit"], registry=r,
        )
        self.limit_blocked = Gauge(
            "conveyor_limit_blocked_seconds", "Seconds until upstream backpressure lifts (0 = open).",
            ["queue"], registry=r,
        )
        self.limit_active = Gauge(
            "conveyor_limit_active", "Jobs active across the fleet (what the concurrency cap counts).",
            ["queue"], registry=r,
        )
        self.group_backlog = Gauge(
            "conveyor_group_backlog", "Groups with waiting jobs by scheduling state, and grouped waiting jobs.",
            ["queue", "kind"], registry=r,
        )
        self.limiter_held = Gauge(
            "conveyor_limiter_held", "Jobs holding a named limiter's concurrency slots, fleet-wide.", ["limiter"],
            registry=r,
        )
        self.limiter_concurrency = Gauge(
            "conveyor_limiter_concurrency_limit", "A named limiter's concurrency limit in force (adaptive or fixed).",
            ["limiter"], registry=r,
        )
        self.limiter_available = Gauge(
            "conveyor_limiter_available", "Units a named limiter lets start now, per dimension (sampled).",
            ["limiter", "dimension"], registry=r,
        )
        self.limiter_totals = Gauge(
            "conveyor_limiter_total", "Totals of a named limiter since it was declared: runs by signal, tokens.",
            ["limiter", "kind"], registry=r,
        )
        self.costs = CostMetrics(r)  # cost per tenant and budgets (conveyor.costs)
        self.redis_up = Gauge("conveyor_redis_up", "1 when the last Redis PING succeeded.", registry=r)
        self.redis_latency = Histogram(
            "conveyor_redis_roundtrip_seconds",
            "Redis PING round-trip time.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.redis_last_latency = Gauge(
            "conveyor_redis_last_roundtrip_seconds", "Last Redis PING round trip.", registry=r
        )
        # The documents handler's parser threads (0 while the app does not use it), read at scrape time.
        self.parsers_running = Gauge(
            "conveyor_document_parsers_running", "Document parser threads running in this process.", registry=r
        )
        self.parsers_abandoned = Gauge(
            "conveyor_document_parsers_abandoned",
            "Document parser threads still running for a job that ended (timed out, cancelled).", registry=r,
        )
        # Flows whose root is on the queue; Redis keeps the totals (every process sees the same ones),
        # the counters advance by what the totals grew since the last sample.
        self.flows = Counter(
            "conveyor_flows", "Flows (by root queue) started, completed and failed (cancelled included).",
            ["queue", "outcome"], registry=r,
        )
        # The same totals as Redis keeps them: a root that failed, then was retried and completed,
        # counts in `completed` only (the counter above, which never goes down, counted its failure).
        self.flow_outcomes = Gauge(
            "conveyor_flows_now", "Flows (by root queue) started, and by the root's last outcome: completed, failed.",
            ["queue", "outcome"], registry=r,
        )
        self._flow_totals: dict[tuple[str, str], int] = {}
        self._by_kind = {
            OutcomeKind.COMPLETED: self.completed,
            OutcomeKind.FAILED: self.failed,
            OutcomeKind.RETRY: self.retried,
            OutcomeKind.CANCELLED: self.cancelled,
            OutcomeKind.BACK: self.returned,
        }

    def label_name(self, queue: str, name: str) -> str:
        return name if name in self.known_names.get(queue, ()) else OTHER_NAME

    def observe_job(self, queue: str, name: str, outcome: JobOutcome) -> None:
        label = self.label_name(queue, name)
        self.duration.labels(queue, label).observe(outcome.duration_s)
        counter = self._by_kind.get(outcome.kind)
        if counter is not None:
            counter.labels(queue, label).inc()

    def watch_queue(
        self, queue: str, concurrency: int, active: Callable[[], float], peak: Callable[[], float]
    ) -> None:
        """Gauges read at scrape time from the live worker."""
        self.active.labels(queue).set_function(active)
        self.peak_active.labels(queue).set_function(peak)
        self.concurrency.labels(queue).set(concurrency)
        self.loop_up.labels(queue).set(1)
        for state in JobState:
            self.depth.labels(queue, state.value).set(0)

    def watch_parsers(self, parsers: Callable[[], HeldThreads | None]) -> None:
        """Parser gauges read at scrape time from whatever pool `parsers()` returns then (None: 0)."""

        def running() -> float:
            pool = parsers()
            return 0.0 if pool is None else float(pool.running)

        def abandoned() -> float:
            pool = parsers()
            return 0.0 if pool is None else float(pool.abandoned)

        self.parsers_running.set_function(running)
        self.parsers_abandoned.set_function(abandoned)

    def set_depths(self, queue: str, counts: Mapping[JobState, int]) -> None:
        for state, n in counts.items():
            self.depth.labels(queue, state.value).set(n)

    def set_flow_totals(self, queue: str, totals: Mapping[str, int]) -> None:
        """Advance the flow counters to the totals kept in Redis (a total that went down, because the
        queue was obliterated or a failed root was retried, starts over from there), and set the
        gauges to those totals (each root counted by its last outcome)."""
        for outcome, total in totals.items():
            key = (queue, outcome)
            last = self._flow_totals.get(key)
            counter = self.flows.labels(queue, outcome)
            self.flow_outcomes.labels(queue, outcome).set(total)
            if last is not None and total > last:
                counter.inc(total - last)
            elif last is None and total > 0:
                counter.inc(total)
            self._flow_totals[key] = total

    def set_limits(self, queue: str, state: Mapping[str, Any]) -> None:
        """Gauges from `Queue.limits_state()`."""
        for name in ("rate", "cost"):
            limiter = state.get(name)
            if limiter is not None:
                self.limit_tokens.labels(queue, name).set(limiter["tokens"])
        blocked = state.get("blocked_until_ms")
        self.limit_blocked.labels(queue).set(0 if blocked is None else max(0.0, (blocked - state["now_ms"]) / 1000))
        self.limit_active.labels(queue).set(state["active"])
        groups = state["groups"]
        for kind in ("ready", "parked", "capped"):
            self.group_backlog.labels(queue, kind).set(groups[kind])
        self.group_backlog.labels(queue, "waiting_jobs").set(state["waiting"]["grouped"])

    def set_limiter(self, state: Mapping[str, Any]) -> None:
        """Gauges from `SharedLimiter.state()`."""
        name = state["name"]
        conc = state["concurrency"]
        self.limiter_held.labels(name).set(conc["held"])
        limit = conc["adaptive_limit"] if conc["adaptive_limit"] is not None else conc["limit"]
        if limit is not None:
            self.limiter_concurrency.labels(name).set(limit)
        for dim, level in state["levels"].items():
            self.limiter_available.labels(name, dim).set(level["available"])
        for kind, value in state["totals"].items():
            self.limiter_totals.labels(name, kind).set(value)

    def observe_redis(self, latency_s: float | None) -> None:
        self.redis_up.set(0 if latency_s is None else 1)
        if latency_s is not None:
            self.redis_latency.observe(latency_s)
            self.redis_last_latency.set(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware(Middleware):
    """Feeds each finished run's duration and outcome into the metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        self.metrics.observe_job(ctx.queue, ctx.name, outcome)
