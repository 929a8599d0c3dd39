"""Runs one job's handler and turns what happened into a JobOutcome."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from conveyor import codec
from conveyor.backoff import BackoffPolicies, Exponential, parse_backoff
from conveyor.errors import JobTimeoutError, RateLimited, Retry, SerializationError, Unrecoverable
from conveyor.worker.context import JobContext
from conveyor.worker.outcome import JobOutcome, OutcomeKind, describe_error

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


class Runner:
    """Executes handlers with timeouts, thread offloading for sync code and error classification."""

    def __init__(
        self,
        handlers: Mapping[str, Handler],
        *,
        threads: int,
        max_result_bytes: int,
        backoffs: BackoffPolicies | None = None,
    ) -> None:
        self.handlers = {name: HandlerSpec.of(fn) for name, fn in handlers.items()}
        self.backoffs = backoffs or BackoffPolicies()
        self.max_result_bytes = max_result_bytes
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self.handing_back = False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def run(self, ctx: JobContext, raw_data: str) -> JobOutcome:
        started = time.perf_counter()
        outcome = await self._run(ctx, raw_data)
        outcome.duration_s = time.perf_counter() - started
        return outcome

    async def _run(self, ctx: JobContext, raw_data: str) -> JobOutcome:
        spec = self.handlers.get(ctx.name)
        timeout = ctx.options.get("timeout")
        timer: asyncio.Timeout | None = None
        try:
            if spec is None:
                raise Unrecoverable(f"no handler registered for job name {ctx.name!r} on this worker")
            data = codec.loads(raw_data)
            ctx.data = data
            if timeout:
                async with asyncio.timeout(timeout) as timer:
                    result = await self._call(spec, ctx, data)
            else:
                result = await self._call(spec, ctx, data)
            return self._completed(ctx, result)
        except asyncio.CancelledError:
            if ctx.lease_lost:
                return JobOutcome(OutcomeKind.LOST, reason="lease lost")
            if ctx.cancel_requested:
                return JobOutcome(OutcomeKind.CANCELLED, error={"type": "Cancelled", "message": "cancelled on request"})
            if self.handing_back:
                return JobOutcome(OutcomeKind.BACK, reason="worker shutdown")
            raise
        except TimeoutError as exc:
            if timer is not None and timer.expired():
                err = JobTimeoutError(f"job exceeded its timeout of {timeout} s")
                return self._retry_or_fail(ctx, err, describe_error(err, ctx.attempt))
            return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt))
        except Retry as exc:
            return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt), after=exc.after)
        except RateLimited as exc:
            return JobOutcome(OutcomeKind.BACK, delay_s=exc.retry_after, reason=exc.reason, throttle=True)
        except Unrecoverable as exc:
            return JobOutcome(OutcomeKind.FAILED, error=describe_error(exc, ctx.attempt))
        except Exception as exc:
            if ctx.lease_lost:
                return JobOutcome(OutcomeKind.LOST, reason="lease lost")
            return self._retry_or_fail(ctx, exc, describe_error(exc, ctx.attempt))

    async def _call(self, spec: HandlerSpec, ctx: JobContext, data: Any) -> Any:
        if spec.is_async:
            return await spec.fn(ctx, data)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="conveyor-job")
        loop = asyncio.get_running_loop()
        ctx.loop = loop
        # The thread runs in a copy of this task's context, so context set by middleware (a trace
        # span, say) is the sync handler's too, as it is an async handler's.
        return await loop.run_in_executor(self._pool, contextvars.copy_context().run, spec.fn, ctx, data)

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
