"""What a run ended with, decided from the handler's return or exception."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_STACK_CHARS = 8000
MAX_MESSAGE_CHARS = 2000


class OutcomeKind(StrEnum):
    COMPLETED = "C"
    RETRY = "R"
    FAILED = "F"
    CANCELLED = "X"
    BACK = "B"  # back to waiting without using an attempt (rate limited, shutdown hand-back)
    LOST = "L"  # lease lost: nothing is written
    HELD = "H"  # no handler on this worker: the job waits for a worker that has one (no attempt used)
    WAIT = "W"  # the handler waits for its flow children: it runs again when they end (no attempt used)


# How each kind is named in logs and traces.
OUTCOME_NAMES = {
    OutcomeKind.COMPLETED: "completed",
    OutcomeKind.RETRY: "retry",
    OutcomeKind.FAILED: "failed",
    OutcomeKind.CANCELLED: "cancelled",
    OutcomeKind.BACK: "returned",
    OutcomeKind.LOST: "lease_lost",
    OutcomeKind.WAIT: "waiting_children",
}


@dataclass(slots=True)
class JobOutcome:
    """How a run ended (mutable only so the runner can stamp the duration without a copy)."""

    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    delay_s: float = 0.0
    reason: str = ""
    duration_s: float = 0.0
    throttle: bool = False  # BACK because an upstream rate-limited us: block claiming meanwhile

    @property
    def succeeded(self) -> bool:
        return self.kind is OutcomeKind.COMPLETED


def describe_error(exc: BaseException, attempt: int) -> dict[str, Any]:
    """The error as stored with the job: type, message, stack (bounded), attempt."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return {
        "type": type(exc).__name__,
        "message": str(exc)[:MAX_MESSAGE_CHARS],
        "stack": stack[-MAX_STACK_CHARS:],
        "attempt": attempt,
    }
