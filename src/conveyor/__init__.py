"""Conveyor: a Redis/Valkey-backed background-job system for Python services."""

from conveyor.app import Conveyor, QueueConfig, Task
from conveyor.backoff import BackoffPolicies, Exponential, Fixed, Named
from conveyor.errors import (
    ConfigurationError,
    ConnectionFailedError,
    ConveyorError,
    DurabilityError,
    IdempotencyConflictError,
    InvalidJobError,
    InvalidOptionError,
    InvalidStateError,
    JobCancelledError,
    JobFailedError,
    JobInterrupted,
    JobNotFoundError,
    JobTimeoutError,
    LeaseLostError,
    PayloadTooLargeError,
    PayloadValidationError,
    QueueNotEmptyError,
    RateLimited,
    Retry,
    SerializationError,
    SpoiledKeyError,
    Unrecoverable,
)
from conveyor.events import Event
from conveyor.job import TERMINAL, Job, JobRecord, JobState
from conveyor.middleware import Middleware
from conveyor.options import JobOptions, JobSpec
from conveyor.queue import Page, Queue, Retention
from conveyor.redis.durability import Durability
from conveyor.worker import JobContext, JobOutcome, OutcomeKind, Worker, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "TERMINAL", "BackoffPolicies", "ConfigurationError", "ConnectionFailedError", "Conveyor", "ConveyorError",
    "Durability", "DurabilityError", "Event", "Exponential", "Fixed", "IdempotencyConflictError",
    "InvalidJobError", "InvalidOptionError", "InvalidStateError", "Job", "JobCancelledError", "JobContext",
    "JobFailedError", "JobInterrupted", "JobNotFoundError", "JobOptions", "JobOutcome", "JobRecord",
    "JobSpec", "JobState", "JobTimeoutError", "LeaseLostError", "Middleware", "Named", "OutcomeKind", "Page",
    "PayloadTooLargeError", "PayloadValidationError", "Queue", "QueueConfig", "QueueNotEmptyError",
    "RateLimited", "Retention", "Retry", "SerializationError", "SpoiledKeyError", "Task", "Unrecoverable", "Worker",
    "WorkerStats", "__version__",
]
