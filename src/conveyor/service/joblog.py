"""One structured log line per job start and finish. Payloads, results and error messages only in debug."""

from __future__ import annotations

from typing import Any

import structlog

from conveyor.middleware import Middleware
from conveyor.worker import JobContext, JobOutcome, OutcomeKind
from conveyor.worker.outcome import OUTCOME_NAMES


class JobLogMiddleware(Middleware):
    def __init__(self, *, debug: bool = False) -> None:
        self.debug = debug
        self.log = structlog.get_logger("conveyor.jobs")

    async def before_job(self, ctx: JobContext) -> None:
        self.log.info("job started", queue=ctx.queue, job_id=ctx.job_id, job=ctx.name, attempt=ctx.attempt)

    async def after_job(self, ctx: JobContext, outcome: JobOutcome) -> None:
        fields: dict[str, Any] = {
            "queue": ctx.queue,
            "job_id": ctx.job_id,
            "job": ctx.name,
            "attempt": ctx.attempt,
            "duration_s": round(outcome.duration_s, 4),
            "outcome": OUTCOME_NAMES[outcome.kind],
        }
        if outcome.error:
            fields["error_type"] = outcome.error.get("type")
        if outcome.kind in (OutcomeKind.RETRY, OutcomeKind.BACK) and outcome.delay_s:
            fields["retry_in_s"] = round(outcome.delay_s, 3)
        if self.debug:
            fields["payload"] = ctx.data
            if outcome.error:
                fields["error"] = outcome.error.get("message")
            if outcome.result is not None:
                fields["result"] = bytes(outcome.result).decode(errors="replace")[:2000]
        if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.LOST):
            self.log.warning("job finished", **fields)
        else:
            self.log.info("job finished", **fields)
