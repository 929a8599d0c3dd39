"""Runs one lease's handler and turns what happened into a JobOutcome."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor import codec
from conveyor.backoff import BackoffPolicies, Exponential, parse_backoff
from conveyor.errors import (
    ConnectionFailedError,
    InvalidFlowError,
    JobInterrupted,
    JobTimeoutError,
    RateLimited,
    Retry,
    SerializationError,
    Unrecoverable,
    WaitForChildren,
    rate_limited_wait,
)
from conveyor.worker.context import JobContext
from conveyor.worker.lease import Lease, Stop
from conveyor.worker.outcome import JobOutcome, OutcomeKind, describe_error
from conveyor.worker.threads import SyncThreads

Handler = Callable[[JobContext, Any], Awaitable[Any] | Any]
DEFAULT_BACKOFF = Exponential(base=1.0, factor=2.0, max=3600.0, jitter=True)


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    fn: Handler
    is_async: bool

    @classmethod
    def of(cls, fn: Handler) -> HandlerSpec:
        target = getattr(fn, "__call__", fn) if not inspect.isfunction(fn) else fn  # noqa: B004
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(target)
        return cls(fn, is_async)


class StrayCancelledError(Exception):
    """The handler raised CancelledError although nothing cancelled its run (it awaited something
    that another task cancelled): a failed attempt."""



class Runner:
    """Executes handlers with timeouts, threads for sync code and error classification."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        threads: SyncThreads,
        max_result_bytes: int,
        backoffs: BackoffPolicies | None = None,
    ) -> None:
        self.handlers = {name: HandlerSpec.of(fn) for name, fn in handlers.items()}
        self.backoffs = backoffs or BackoffPolicies()
        self.max_result_bytes = max_result_bytes
        self.threads = threads

    async def run(self, lease: Lease, ctx: JobContext, raw_data: str) -> JobOutcome:
        """The outcome of running `lease`'s handler (which the caller checked exists). Anything the
        handler raises, BaseExceptions included, is its outcome; this raises only CancelledError, when
        the worker's own task is cancelled from outside (event loop ending)."""
        started = time.perf_counter()
        outcome = await self._run(lease, ctx, raw_data)
        outcome.duration_s = time.perf_counter() - started
        return outcome

    async def _run(self, lease: Lease, ctx: JobContext, raw_data: str) -> JobOutcome:
        spec = self.handlers[lease.name]
        timeout = lease.options.get("timeout")
        timer: asyncio.Timeout | None = None
        try:
            data = codec.loads(raw_data)
            if "pipe" in lease.options:  # a chain step: its payload is the previous step's result
                data = await ctx.previous()
            ctx.data = data
            if not spec.is_async:
                result = await self._run_sync(lease, spec, ctx, data, timeout)
            elif timeout:
                lease.started = True
                lease.started_at = time.monotonic()
                async with asyncio.timeout(timeout) as timer:
                    result = await spec.fn(ctx, data)
            else:
                lease.started = True
                result = await spec.fn(ctx, data)
            return self._completed(ctx, result)
        except asyncio.CancelledError as exc:
            if lease.stop is not None:
                return self.stopped(lease, ctx)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the worker's task itself is being cancelled from outside
            stray = StrayCancelledError(
                f"the handler raised CancelledError without its run being cancelled: {exc!r}")
            return self._retry_or_fail(ctx, stray, describe_error(stray, ctx.attempt))
        except JobInterrupted:
            return self.stopped(lease, ctx)
        except TimeoutError as exc:
            if timer is not None and timer.expired():
                err = JobTimeoutError(f"job exceeded its timeout of {timeout} s")
                return self._retry_or_fail(ctx, err, describe_error(err, ctx.attempt))
            return self._failed_run(lease, ctx, exc)
        except WaitForChildren:
            return await self._wait_outcome(ctx)
        except Retry as exc:
            return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt), after=exc.after)
        except RateLimited as exc:
            # (again here: `retry_after` may have been changed after the signal was built)
            wait = rate_limited_wait(exc.retry_after)
            return JobOutcome(OutcomeKind.BACK, delay_s=wait, reason=exc.reason, throttle=True)
        except Unrecoverable as exc:
            return JobOutcome(OutcomeKind.FAILED, error=describe_error(exc, ctx.attempt))
        except BaseException as exc:  # SystemExit, KeyboardInterrupt, GeneratorExit, its own...
            # raised by the handler itself are its failure: they must neither end the worker's event
            # loop nor leave the run without an outcome (the job would go back and run again at once).
            return self._failed_run(lease, ctx, exc)

    async def _wait_outcome(self, ctx: JobContext) -> JobOutcome:
        """The run waits for the job's children; a job that has none fails instead: it would go back
        to waiting at once with its attempt refunded and, run again as it was, wait again forever
        (the documented fan-out over a list that turned out empty)."""
        try:
            has_children = await ctx._has_children()
        except ConnectionFailedError:
            has_children = True  # cannot tell now: the wait goes through as before
        if has_children:
            return JobOutcome(OutcomeKind.WAIT, reason="waiting for children")
        err = InvalidFlowError("children", "wait_for_children() in a job that has no children: "
                                           "add_children() was given none, so there is nothing to wait for")
        return JobOutcome(OutcomeKind.FAILED, error=describe_error(err, ctx.attempt))

    def stopped(self, lease: Lease, ctx: JobContext) -> JobOutcome:
        """The outcome of a run the worker stopped (lease.stop says why)."""
        stop = lease.stop
        if stop is Stop.LOST:
            return JobOutcome(OutcomeKind.LOST, reason=stop.value)
        if stop is Stop.CANCEL:
            return JobOutcome(OutcomeKind.CANCELLED, error={"type": "Cancelled", "message": "cancelled on request"})
        if stop is Stop.TIMEOUT:
            err = JobTimeoutError(f"job exceeded its timeout of {lease.options.get('timeout')} s")
            return self._retry_or_fail(ctx, err, describe_error(err, ctx.attempt))
        return JobOutcome(OutcomeKind.BACK, reason=Stop.SHUTDOWN.value)

    def failed(self, ctx: JobContext, exc: BaseException) -> JobOutcome:
        """A failed attempt for an error raised around the handler (middleware)."""
        return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt))

    def _failed_run(self, lease: Lease, ctx: JobContext, exc: BaseException) -> JobOutcome:
        if lease.stop is not None:  # e.g. cleanup after an interruption raised something else
            return self.stopped(lease, ctx)
        return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt))

    async def _run_sync(
        self, lease: Lease, spec: HandlerSpec, ctx: JobContext, data: Any, timeout: float | None
    ) -> Any:
        """Run in a thread; the timeout counts from when the handler's code starts there. A timed-out
        handler is interrupted, and this returns only when its thread has returned."""
        ctx.loop = asyncio.get_running_loop()
        # The thread runs in a copy of this task's context, so context set by middleware (a trace
        # span, say) is the sync handler's too, as it is an async handler's.
        future = self.threads.submit(lease, contextvars.copy_context().run, spec.fn, ctx, data)
        if timeout:
            while not future.done():
                began = lease.started_at
                left = timeout if began is None else began + timeout - time.monotonic()
                if left <= 0:
                    lease.request_stop(Stop.TIMEOUT)
                    break
                await asyncio.wait((future,), timeout=left)
        ok, value = await future
        if ok:
            return value
        raise value

    def _completed(self, ctx: JobContext, result: Any) -> JobOutcome:
        try:
            encoded = codec.dumps(result)
        except SerializationError as exc:
            return JobOutcome(OutcomeKind.FAILED, error=describe_error(exc, ctx.attempt))
        if len(encoded) > self.max_result_bytes:
            err = SerializationError(f"result is {len(encoded)} bytes, over the limit of {self.max_result_bytes}")
            return JobOutcome(OutcomeKind.FAILED, error=describe_error(err, ctx.attempt))
        return JobOutcome(OutcomeKind.COMPLETED, result=encoded)

    def _retry_or_fail(
        self, ctx: JobContext, exc: BaseException, error: dict[str, Any], after: float | None = None
    ) -> JobOutcome:
        if ctx.attempt >= ctx.max_attempts:
            return JobOutcome(OutcomeKind.FAILED, error=error)
        if after is None:
            spec = ctx.options.get("backoff")
            try:  # stored options are data: a Named policy runs only if this app registered it
                policy = parse_backoff(spec) if spec is not None else DEFAULT_BACKOFF
                after = self.backoffs.seconds(policy, ctx.attempt, exc)
            except Exception as bad:  # an unknown or broken backoff must not lose the job
                error = {**error, "backoff_error": f"{type(bad).__name__}: {bad}"[:500]}
                after = DEFAULT_BACKOFF.seconds(ctx.attempt, exc)
        return JobOutcome(OutcomeKind.RETRY, error=error, delay_s=after)
