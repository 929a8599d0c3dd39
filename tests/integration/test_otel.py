"""OpenTelemetry: the enqueueing trace context travels in the job; each run is a child CONSUMER span
with the messaging conventions, retries and failures recorded (the SDK's in-memory exporter)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor import Conveyor, JobContext, JobState, Unrecoverable
from conveyor.otel import Tracing
from tests.conftest import running, wait_for


@pytest.fixture
def exporter() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    yield exp, provider
    provider.shutdown()


def build(url: str, queue: str, provider: TracerProvider) -> Conveyor:
    app = Conveyor(url, middleware=[Tracing(tracer_provider=provider)])
    tracer = provider.get_tracer("handlers")

    @app.task(queue=queue, attempts=3, backoff=0.01)
    async def flaky(ctx: JobContext, fail_times: int) -> str:
        with tracer.start_as_current_span("inside async handler"):
            if ctx.attempt <= fail_times:
                raise RuntimeError(f"attempt {ctx.attempt} broke")
        return "ok"

    @app.task(queue=queue)
    async def doomed(ctx: JobContext) -> None:
        raise Unrecoverable("bad input")

    @app.task(queue=queue)
    def blocking(ctx: JobContext) -> str:
        with tracer.start_as_current_span("inside sync handler"):
            return "done"

    return app


def runs(spans: tuple[ReadableSpan, ...], job_id: str) -> list[ReadableSpan]:
    found = [s for s in spans
             if s.kind is SpanKind.CONSUMER and (s.attributes or {}).get("messaging.message.id") == job_id]
    return sorted(found, key=lambda s: int((s.attributes or {})["conveyor.job.attempt"]))  # type: ignore[arg-type]


async def test_run_spans_are_children_of_the_enqueueing_span(
    redis_url: str, qname: str, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    exp, provider = exporter
    app = build(redis_url, qname, provider)
    tasks: Any = app
    request_tracer = provider.get_tracer("web")
    with request_tracer.start_as_current_span("POST /signup", kind=SpanKind.SERVER) as request_span:
        ok = await tasks.get_task(qname, "flaky").enqueue(1)
        failed = await tasks.get_task(qname, "doomed").enqueue()
        threaded = await asyncio.to_thread(tasks.get_task(qname, "blocking").enqueue_sync)  # sync enqueue too
    parent = request_span.get_span_context()
    stored = (await ok.record()).options["traceparent"]
    assert stored.startswith(f"00-{parent.trace_id:032x}-{parent.span_id:016x}-")
    assert app.sync_queue(qname).get_job(threaded.id).options["traceparent"] == stored  # type: ignore[union-attr]

    async with running(app.worker(qname)):
        for job_id in (ok.id, failed.id, threaded.id):
            await app.queue(qname).job(job_id).wait(timeout=30)
        await wait_for(lambda: len(runs(exp.get_finished_spans(), ok.id)) == 2, timeout=10, what="two runs exported")
    spans = exp.get_finished_spans()

    first, second = runs(spans, ok.id)
    for span in (first, second):
        assert span.name == f"process {qname}"
        assert span.parent is not None and span.parent.span_id == parent.span_id
        assert span.context.trace_id == parent.trace_id
        attrs = span.attributes or {}
        assert attrs["messaging.system"] == "conveyor" and attrs["messaging.destination.name"] == qname
        assert attrs["messaging.operation.type"] == "process" and attrs["conveyor.job.name"] == "flaky"
    assert (first.attributes or {})["conveyor.job.attempt"] == 1
    assert (first.attributes or {})["conveyor.job.outcome"] == "retry"
    assert first.status.status_code is StatusCode.ERROR
    [event] = [e for e in first.events if e.name == "exception"]
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    assert "attempt 1 broke" in str((event.attributes or {})["exception.message"])
    assert (second.attributes or {})["conveyor.job.attempt"] == 2
    assert (second.attributes or {})["conveyor.job.outcome"] == "completed"
    assert second.status.status_code is not StatusCode.ERROR and not second.events

    [dead] = runs(spans, failed.id)
    assert (dead.attributes or {})["conveyor.job.outcome"] == "failed"
    assert (dead.attributes or {})["error.type"] == "Unrecoverable"
    assert dead.status.status_code is StatusCode.ERROR

    # Spans the handler opens (async or in a sync handler's thread) are children of the run span.
    [run_sync] = runs(spans, threaded.id)
    inner_sync = [s for s in spans if s.name == "inside sync handler"]
    assert [s.parent.span_id for s in inner_sync if s.parent] == [run_sync.context.span_id]
    inner_async = [s for s in spans if s.name == "inside async handler"]
    assert sorted(s.parent.span_id for s in inner_async if s.parent) == sorted([first.context.span_id,
                                                                               second.context.span_id])
    await app.close()


async def test_without_an_active_span_or_without_tracing_nothing_is_carried(
    redis_url: str, qname: str, exporter: tuple[InMemorySpanExporter, TracerProvider]
) -> None:
    _, provider = exporter
    traced = build(redis_url, qname, provider)
    job = await traced.get_task(qname, "doomed").enqueue()  # type: ignore[union-attr]
    assert "traceparent" not in (await job.record()).options
    plain = Conveyor(redis_url)
    assert not plain.queue(qname).middleware.propagators  # off: the enqueue path has nothing to call
    with provider.get_tracer("web").start_as_current_span("request"):
        other = await plain.queue(qname).add("doomed")
    assert (await other.record()).options == {}
    assert await other.state() is JobState.WAITING
    await traced.close()
    await plain.close()
