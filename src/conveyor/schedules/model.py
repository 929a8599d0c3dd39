"""The schedule definition: what to enqueue, when, and what to do about ticks nobody was up for.

A `Schedule` is validated once when built (so nothing half-valid reaches Redis) and stored as JSON.
Times in storage are epoch milliseconds; the public model uses aware datetimes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from conveyor import codec
from conveyor.errors import ConveyorError, InvalidScheduleError
from conveyor.options import JobOptions
from conveyor.queue import check_job_name
from conveyor.redis.keys import validate_queue_name

_SCHEDULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 366 * 86400.0
MAX_CATCH_UP_CAP = 1000
MAX_DATA_BYTES = 64 * 1024
# Options a schedule may carry for its jobs; ids and keys are derived per tick, never given.
SCHEDULE_JOB_OPTIONS = frozenset(
    {"priority", "delay", "attempts", "backoff", "timeout", "result_ttl", "failed_ttl", "group", "cost"}
)
MAINTENANCE_ID = "conveyor-maintenance"
ALERTS_ID = "conveyor-alerts"
BUILTIN_IDS = frozenset({MAINTENANCE_ID, ALERTS_ID})  # schedulers write these: not for API schedules


class MissedPolicy(StrEnum):
    """What a scheduler does with ticks that passed while no scheduler was running."""

    ONCE = "once"  # run one job for all of them (the latest missed tick)
    ALL = "all"  # run each missed tick, the most recent `catch_up_cap` of them
    SKIP = "skip"  # run none; carry on with the next tick


class ScheduleKind(StrEnum):
    JOB = "job"  # enqueue `task` on `queue`
    MAINTENANCE = "maintenance"  # built in: the scheduler trims retention in-process
    ALERTS = "alerts"  # built in: the scheduler evaluates alert rules in-process (conveyor.alerts)


def check_schedule_id(value: str) -> str:
    if not isinstance(value, str) or not _SCHEDULE_ID.match(value):
        raise InvalidScheduleError(
            f"invalid schedule id {value!r}: 1-100 characters from letters, digits, '.', '_', '-'"
        )
    return value


def job_options_mapping(options: JobOptions | Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated, JSON-ready job options for scheduled jobs (unset options left out)."""
    if options is None:
        return {}
    if isinstance(options, Mapping):
        unknown = set(options) - SCHEDULE_JOB_OPTIONS
        if unknown:
            raise InvalidScheduleError(
                f"job options {sorted(unknown)} cannot be set on a schedule; "
                f"allowed: {sorted(SCHEDULE_JOB_OPTIONS)}"
            )
        try:
            options = JobOptions.from_mapping(options)
        except ConveyorError as exc:
            raise InvalidScheduleError(str(exc)) from None
    out: dict[str, Any] = {}
    for name in sorted(SCHEDULE_JOB_OPTIONS):
        value = getattr(options, name)
        if value is not None:
            out[name] = value.to_json() if name == "backoff" else value
    for name in ("job_id", "idempotency_key", "run_at"):
        if getattr(options, name) is not None:
            raise InvalidScheduleError(f"{name} cannot be set on a schedule (each tick gets its own job id)")
    return out


# Start and end stay well inside datetime's range, so tick arithmetic near them cannot overflow.
LATEST_DATE = datetime(9000, 1, 1, tzinfo=UTC)


def _aware(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidScheduleError(f"{name} must be a timezone-aware datetime")
    try:
        value = value.astimezone(UTC)
    except OverflowError:
        raise InvalidScheduleError(f"{name} must be before {LATEST_DATE.isoformat()}") from None
    if value >= LATEST_DATE:
        raise InvalidScheduleError(f"{name} must be before {LATEST_DATE.isoformat()}")
    return value


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_ms(value: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """One recurring job: either `cron` (+ `tz`) or `interval_s`, between optional `start` and `end`."""

    id: str
    task: str
    queue: str = "default"
    data: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    tz: str = "UTC"
    interval_s: float | None = None
    start: datetime | None = None
    end: datetime | None = None
    paused: bool = False
    missed: MissedPolicy = MissedPolicy.ONCE
    catch_up_cap: int = 100
    kind: ScheduleKind = ScheduleKind.JOB
    source: str = "api"

    def __post_init__(self) -> None:
        s = object.__setattr__
        check_schedule_id(self.id)
        try:
            check_job_name(self.task)
            validate_queue_name(self.queue)
        except ConveyorError as exc:
            raise InvalidScheduleError(str(exc)) from None
        s(self, "options", job_options_mapping(self.options))
        try:
            encoded = codec.dumps_canonical(self.data)
        except ConveyorError as exc:
            raise InvalidScheduleError(str(exc)) from None
        if len(encoded) > MAX_DATA_BYTES:
            raise InvalidScheduleError(f"schedule data is {len(encoded)} bytes, over {MAX_DATA_BYTES}")
        if (self.cron is None) == (self.interval_s is None):
            raise InvalidScheduleError("give exactly one of cron or interval_s")
        if self.cron is not None:
            self._check_cron(self.cron)
        if self.interval_s is not None:
            v = self.interval_s
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not (
                MIN_INTERVAL_S <= v <= MAX_INTERVAL_S
            ):
                raise InvalidScheduleError(
                    f"interval_s must be in [{MIN_INTERVAL_S}, {MAX_INTERVAL_S}], got {v!r}"
                )
            s(self, "interval_s", float(v))
        try:
            ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise InvalidScheduleError(f"unknown time zone {self.tz!r}") from None
        s(self, "start", _aware("start", self.start))
        s(self, "end", _aware("end", self.end))
        if self.start and self.end and self.end <= self.start:
            raise InvalidScheduleError("end must be after start")
        try:
            s(self, "missed", MissedPolicy(self.missed))
            s(self, "kind", ScheduleKind(self.kind))
        except ValueError as exc:
            raise InvalidScheduleError(str(exc)) from None
        cap = self.catch_up_cap
        if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= MAX_CATCH_UP_CAP:
            raise InvalidScheduleError(f"catch_up_cap must be an integer in [1, {MAX_CATCH_UP_CAP}]")
        if not isinstance(self.paused, bool):
            raise InvalidScheduleError("paused must be true or false")

    @staticmethod
    def _check_cron(expr: str) -> None:
        if not isinstance(expr, str) or len(expr) > 200 or len(expr.split()) not in (5, 6):
            raise InvalidScheduleError(f"cron expression must have 5 or 6 fields, got {expr!r}")
        if not croniter.is_valid(expr):
            raise InvalidScheduleError(f"invalid cron expression {expr!r}")
        try:  # valid fields that no date satisfies (`0 0 30 2 *`, February 30th) never fire
            croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise InvalidScheduleError(f"cron expression {expr!r} matches no date") from None

    @property
    def fingerprint(self) -> str:
        """Changes exactly when the timing changes; the stored next run survives other edits."""
        timing = {
            "cron": self.cron, "tz": self.tz, "interval_s": self.interval_s,
            "start": None if self.start is None else to_ms(self.start),
            "end": None if self.end is None else to_ms(self.end),
        }
        return hashlib.sha1(codec.dumps_canonical(timing)).hexdigest()[:16]

    def job_id(self, tick_ms: int) -> str:
        """The job of one tick; enqueueing it twice is a no-op, so a tick yields one job."""
        return f"sched:{self.id}:{tick_ms}"

    def with_changes(self, **changes: Any) -> Schedule:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Schedule:
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise InvalidScheduleError(f"unknown schedule fields {sorted(unknown)}")
        clean = dict(value)
        for name in ("start", "end"):
            if isinstance(clean.get(name), str):
                try:
                    clean[name] = datetime.fromisoformat(clean[name])
                except ValueError:
                    raise InvalidScheduleError(f"{name} is not an ISO 8601 datetime") from None
        try:
            return cls(**clean)
        except TypeError as exc:
            raise InvalidScheduleError(str(exc)) from None


def job_id_tick(job_id: str) -> int | None:
    """The tick (epoch ms) a scheduled job was created for, or None for other ids."""
    parts = job_id.split(":")
    if len(parts) == 3 and parts[0] == "sched" and parts[2].isdigit():
        return int(parts[2])
    return None
