"""Conveyor: a Redis/Valkey-backed background-job system for Python services."""

from conveyor.app import Conveyor, QueueConfig, Task
from conveyor.backoff import BackoffPolicies, Exponential, Fixed, Named
from conveyor.errors import (
    ConfigurationError,
    ConnectionFailedError,
    ConveyorError,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidOptionError,
    InvalidStateError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    LeaseLostError,
    PayloadTooLargeError,
    PayloadValidationError,
    QueueNotEmptyError,
    RateLimited,
    Retry,
    SerializationError,
    Unrecoverable,
)
from conveyor.events import Event
from conveyor.job import TERMINAL, Job, JobRecord, JobState
from conveyor.middleware import Middleware
from conveyor.options import JobOptions, JobSpec
from conveyor.queue import Page, Queue, Retention
from conveyor.worker import JobContext, JobOutcome, OutcomeKind, Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "TERMINAL", "BackoffPolicies", "ConfigurationError", "ConnectionFailedError", "Conveyor", "ConveyorError",
    "Event", "Exponential", "Fixed", "IdempotencyConflictError", "InvalidJobError", "InvalidOptionError",
    "InvalidStateError", "Job", "JobCancelledError", "JobContext", "JobFailedError", "JobNotFoundError",
    "JobOptions", "JobOutcome", "JobRecord", "JobSpec", "JobState", "JobTimeoutError", "LeaseLostError",
    "Middleware", "Named", "OutcomeKind", "Page", "PayloadTooLargeError", "PayloadValidationError", "Queue",
    "QueueConfig", "QueueNotEmptyError", "RateLimited", "Retention", "Retry", "SerializationError", "Task",
    "Unrecoverable", "Worker", "WorkerStats", "__version__",
]
