"""OpenTelemetry tracing (`pip install 'conveyor[otel]'`): enqueue → run as one trace.

    app = Conveyor(middleware=[Tracing()])

At enqueue (async or sync, from code or the HTTP API) the current W3C trace context is kept in the
job's stored options (`traceparent`, `tracestate`). The worker runs each attempt inside a CONSUMER
span `process <queue>` whose parent is that context, with the messaging semantic conventions
(`messaging.system`, `messaging.destination.name`, `messaging.message.id`, `messaging.operation.*`)
plus `conveyor.job.name`, `conveyor.job.attempt` and `conveyor.job.outcome`; a retry or a failure
records the error as an exception event and sets the span's status to ERROR. Spans the handler
opens are children of the run span. Without this middleware nothing of it runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor import __version__
from conveyor.middleware import Middleware
from conveyor.worker import JobContext, JobOutcome, OutcomeKind
from conveyor.worker.outcome import OUTCOME_NAMES

if TYPE_CHECKING:
    from conveyor.options import JobSpec

__all__ = ["CARRIED", "SYSTEM", "Tracing"]

SYSTEM = "conveyor"
CARRIED = ("traceparent", "tracestate")
_STATE_KEY = "otel"
_ERRORS = frozenset({OutcomeKind.RETRY, OutcomeKind.FAILED})


class Tracing(Middleware):
    """Carries the trace context from enqueue to run and traces each run (see the module doc)."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("conveyor", __version__, tracer_provider=tracer_provider)
        self.propagator = TraceContextTextMapPropagator()

    def propagate(self, queue: str, spec: JobSpec) -> Mapping[str, str] | None:
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier)
        return {k: carrier[k] for k in CARRIED if k in carrier} or None

    async def before_job(self, ctx: JobContext) -> None:
        carried = {k: str(ctx.options[k]) for k in CARRIED if k in ctx.options}
        parent = self.propagator.extract(carried) if carried else None
        span = self.tracer.start_span(
            f"process {ctx.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": ctx.queue,
                "messaging.message.id": ctx.job_id,
                "conveyor.job.name": ctx.name,
                "conveyor.job.attempt": ctx.attempt,
                "conveyor.job.max_attempts": ctx.max_attempts,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        ctx.state[_STATE_KEY] = (span, token)

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        held: Any = ctx.state.pop(_STATE_KEY, None)
        if held is None:
            return
        span, token = held
        otel_context.detach(token)
        span.set_attribute("conveyor.job.outcome", OUTCOME_NAMES.get(outcome.kind, str(outcome.kind)))
        if outcome.kind in _ERRORS and outcome.error:
            error = outcome.error
            span.set_attribute("error.type", str(error.get("type", "Error")))
            span.add_event("exception", {
                "exception.type": str(error.get("type", "")),
                "exception.message": str(error.get("message", "")),
                "exception.stacktrace": str(error.get("stack", "")),
            })
            if outcome.kind is OutcomeKind.RETRY:
                span.set_attribute("conveyor.job.retry_in_s", outcome.delay_s)
            span.set_status(Status(StatusCode.ERROR, str(error.get("message", ""))[:200]))
        span.end()
