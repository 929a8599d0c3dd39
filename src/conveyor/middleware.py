"""Lifecycle hooks around enqueue and around each job run.

Subclass `Middleware` and override what you need. Hooks run in registration order; one that raises
is logged and skipped, and the others still run (a broken metrics hook must not fail jobs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor.job import Job
    from conveyor.options import JobSpec
    from conveyor.worker.context import JobContext
    from conveyor.worker.outcome import JobOutcome

logger = logging.getLogger(__name__)


class Middleware:
    async def before_enqueue(self, queue: str, spec: JobSpec) -> None:
        """Called before a job is written (once per job of a bulk add)."""

    async def after_enqueue(self, queue: str, spec: JobSpec, job: Job[Any]) -> None:
        """Called after the job is stored (job.created is False for an idempotent repeat)."""

    def propagate(self, queue: str, spec: JobSpec) -> Mapping[str, str] | None:
        """Values to keep with the job in its stored options (e.g. a W3C `traceparent`), read back in
        the worker as `ctx.options`. Synchronous, so async and sync enqueue both call it; names of job
        options are not allowed. Only middleware that overrides it is called."""
        return None

    async def before_job(self, ctx: JobContext) -> None:
        """Called in the worker before the handler runs."""

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        """Called in the worker after the handler ended, before the outcome is recorded."""


class MiddlewareChain:
    """Runs every middleware's hook, isolating failures."""

    __slots__ = ("items", "propagators")

    def __init__(self, items: Sequence[Middleware] = ()) -> None:
        self.items = tuple(items)
        self.propagators = tuple(m for m in self.items if type(m).propagate is not Middleware.propagate)

    def __bool__(self) -> bool:
        return bool(self.items)

    async def call(self, hook: str, *args: Any) -> None:
        for mw in self.items:
            try:
                await getattr(mw, hook)(*args)
            except Exception:
                logger.exception("middleware %s.%s failed", type(mw).__name__, hook)

    def propagated(self, queue: str, spec: JobSpec) -> dict[str, str]:
        """What the propagating middleware adds to one job's stored options (isolating failures)."""
        out: dict[str, str] = {}
        for mw in self.propagators:
            try:
                values = mw.propagate(queue, spec)
            except Exception:
                logger.exception("middleware %s.propagate failed", type(mw).__name__)
                continue
            if values:
                out.update(values)
        return out
