"""One structured log line per job start and finish, at every log level without payloads or results.

A failed attempt logs its error type and message (info while it will be retried, warning when it
failed for good, with the traceback then); secrets that error texts often carry (URL passwords,
bearer tokens, API keys, `password=...`) are masked first.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

from conveyor.middleware import Middleware
from conveyor.worker import JobContext, JobOutcome, OutcomeKind

OUTCOME_NAMES = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.RETRY: "retry",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.CANCELLED: "cancelled",
    OutcomeKind.BACK: "returned",
    OutcomeKind.LOST: "lease_lost",
}
MAX_LOGGED_MESSAGE = 1000
MAX_LOGGED_TRACEBACK = 4000

_SECRETS = (
    (re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]*):[^/\s@]+@"), r"\1:***@"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+"), r"\1 ***"),
    (re.compile(r"\b(cvk_[0-9a-f]{16})_[0-9a-f]{64}\b"), r"\1_***"),
    (re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"), "sk-***"),
    (re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)"
                r"(\"?'?\s*[:=]\s*\"?'?)[^\s\"'&,;]+"), r"\1\2***"),
)


def mask_secrets(text: str) -> str:
    """`text` with credentials masked (best effort: the shapes secrets usually have in errors)."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _tail(text: Any, limit: int) -> str:
    value = mask_secrets(str(text))
    return value if len(value) <= limit else "…" + value[-limit:]


class JobLogMiddleware(Middleware):
    def __init__(self) -> None:
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
            fields["error"] = _tail(outcome.error.get("message", ""), MAX_LOGGED_MESSAGE)
            if outcome.kind is OutcomeKind.FAILED and outcome.error.get("stack"):
                fields["traceback"] = _tail(outcome.error["stack"], MAX_LOGGED_TRACEBACK)
        elif outcome.reason:
            fields["reason"] = _tail(outcome.reason, MAX_LOGGED_MESSAGE)
        if outcome.kind in (OutcomeKind.RETRY, OutcomeKind.BACK) and outcome.delay_s:
            fields["retry_in_s"] = round(outcome.delay_s, 3)
        if outcome.kind in (OutcomeKind.FAILED, OutcomeKind.LOST):
            self.log.warning("job finished", **fields)
        else:
            self.log.info("job finished", **fields)
