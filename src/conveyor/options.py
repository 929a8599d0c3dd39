"""Job options: validated once, merged queue → task → call, stored with the job as compact JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.backoff import Backoff, parse_backoff
from conveyor.errors import InvalidOptionError

PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
ATTEMPTS_MAX = 1000
COST_MAX = 10**12
_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")
DEFAULT_IDEMPOTENCY_TTL_S = 86400.0
# Every duration option lies in [0.001 s, 100 years] (0 where allowed): the scripts take whole ms up to
# 100 years (MAX_MS in lua/includes/common.lua), so a duration outside that range is refused here,
# before anything is written, instead of by a script later (a finish trip refusing every outcome).
MIN_DURATION_S = 0.001
MAX_DURATION_S = 3_155_760_000.0
KEY_MODES = ("debounce", "throttle", "latest")
MAX_KEY_WINDOW_S = 86400.0


def _check_id(kind: str, value: str, *, forbid_numeric: bool) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise InvalidOptionError(
            f"invalid {kind} {clip(value)}: 1-200 characters from letters, digits and . _ : @ / + = -"
        )
    if forbid_numeric and value.isdigit():
        raise InvalidOptionError(f"{kind} {clip(value)} is all digits, which is reserved for generated ids")
    return value


def _seconds(name: str, value: Any, *, allow_zero: bool = True, sub_ms: bool = False) -> float | None:
    """A duration option in seconds: 0 (where `allow_zero`) or in [MIN_DURATION_S, MAX_DURATION_S];
    `sub_ms` also lets through positive values under a millisecond (a delay that rounds to "now")."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidOptionError(f"{name} must be a number of seconds, got {clip(value)}")
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidOptionError(f"{name} must be {'>=' if allow_zero else '>'} 0, got {value!r}")
    if value > MAX_DURATION_S or (0 < value < MIN_DURATION_S and not sub_ms):
        low = "0 or " if allow_zero else ""
        raise InvalidOptionError(
            f"{name} must be {low}between {MIN_DURATION_S} s and {MAX_DURATION_S:.0f} s (100 years), got {value!r}"
        )
    return float(value)


def clip(value: Any, limit: int = 80) -> str:
    """`repr(value)` cut to `limit` characters: messages never echo a whole oversized input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """Everything that can be set on a job besides its name and data. None means "inherit"."""

    job_id: str | None = None
    idempotency_key: str | None = None
    idempotency_ttl: float | None = None
    priority: int | None = None
    delay: float | None = None
    run_at: datetime | None = None
    attempts: int | None = None
    backoff: Backoff | None = None
    timeout: float | None = None
    result_ttl: float | None = None
    failed_ttl: float | None = None
    group: str | None = None
    cost: int | None = None
    # Keyed jobs (docs/llm.md): a key, what a new job of the same key does, and the window in seconds.
    key: str | None = None
    key_mode: str | None = None
    key_window: float | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        if self.job_id is not None:
            _check_id("job id", self.job_id, forbid_numeric=True)
        if self.idempotency_key is not None:
            _check_id("idempotency key", self.idempotency_key, forbid_numeric=False)
        s(self, "idempotency_ttl", _seconds("idempotency_ttl", self.idempotency_ttl, allow_zero=False))
        if self.priority is not None and (
            isinstance(self.priority, bool) or not isinstance(self.priority, int)
            or not PRIORITY_MIN <= self.priority <= PRIORITY_MAX
        ):
            raise InvalidOptionError(f"priority must be an integer in [{PRIORITY_MIN}, {PRIORITY_MAX}]")
        s(self, "delay", _seconds("delay", self.delay, sub_ms=True))
        if self.run_at is not None:
            if not isinstance(self.run_at, datetime) or self.run_at.tzinfo is None:
                raise InvalidOptionError("run_at must be a timezone-aware datetime")
            if self.delay is not None:
                raise InvalidOptionError("give either delay or run_at, not both")
            if self.delay_ms() > MAX_DURATION_S * 1000:
                raise InvalidOptionError(f"run_at must be at most 100 years ahead, got {self.run_at.isoformat()}")
        if self.attempts is not None and (
            isinstance(self.attempts, bool) or not isinstance(self.attempts, int)
            or not 1 <= self.attempts <= ATTEMPTS_MAX
        ):
            raise InvalidOptionError(f"attempts must be an integer in [1, {ATTEMPTS_MAX}], got {clip(self.attempts)}")
        if self.backoff is not None:
            s(self, "backoff", parse_backoff(self.backoff))
        s(self, "timeout", _seconds("timeout", self.timeout, allow_zero=False))
        s(self, "result_ttl", _seconds("result_ttl", self.result_ttl))
        s(self, "failed_ttl", _seconds("failed_ttl", self.failed_ttl, allow_zero=False))
        if self.group is not None:
            _check_id("group", self.group, forbid_numeric=False)
        if self.cost is not None and (
            isinstance(self.cost, bool) or not isinstance(self.cost, int) or not 0 <= self.cost <= COST_MAX
        ):
            raise InvalidOptionError(f"cost must be an integer in [0, 10**12], got {clip(self.cost)}")
        self._check_keyed()

    def _check_keyed(self) -> None:
        s = object.__setattr__
        if self.key is not None:
            _check_id("key", self.key, forbid_numeric=False)
        if self.key_mode is not None and self.key_mode not in KEY_MODES:
            raise InvalidOptionError(f"key_mode must be one of {list(KEY_MODES)}, got {clip(self.key_mode)}")
        window = _seconds("key_window", self.key_window)
        if window is not None and window > MAX_KEY_WINDOW_S:
            raise InvalidOptionError(f"key_window must be at most {MAX_KEY_WINDOW_S:.0f} seconds, got {window!r}")
        s(self, "key_window", window)

    def check_keyed(self) -> None:
        """The keyed options of a job as enqueued (after merging): all or none, and consistent."""
        if self.key is None and self.key_mode is None and self.key_window is None:
            return
        if self.key is None or self.key_mode is None:
            raise InvalidOptionError("a keyed job needs both key and key_mode")
        if self.key_mode == "latest":
            if self.key_window is not None:
                raise InvalidOptionError("key_mode 'latest' takes no key_window")
        elif not self.key_window:
            raise InvalidOptionError(f"key_mode {clip(self.key_mode)} needs key_window > 0 (seconds)")
        if self.job_id is not None or self.idempotency_key is not None:
            raise InvalidOptionError("a keyed job takes no job_id or idempotency_key (a new job may replace it)")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> JobOptions:
        """Build from a plain mapping (bulk specs, HTTP bodies); unknown keys are an error."""
        if not values:
            return NO_OPTIONS
        known = _FIELD_NAMES
        unknown = set(values) - known
        if unknown:
            names = ", ".join(clip(str(k), 40) for k in sorted(map(str, unknown))[:5])
            raise InvalidOptionError(f"unknown job options {names}; known: {sorted(known)}")
        clean = dict(values)
        if isinstance(clean.get("run_at"), str):
            try:
                clean["run_at"] = datetime.fromisoformat(clean["run_at"])
            except ValueError:
                raise InvalidOptionError(f"run_at is not an ISO 8601 datetime: {clip(clean['run_at'])}") from None
        try:
            return cls(**clean)
        except TypeError as exc:
            raise InvalidOptionError(str(exc)) from None

    def merged_over(self, base: JobOptions | None) -> JobOptions:
        """These options with unset (None) fields taken from `base`."""
        if base is None or base is NO_OPTIONS or base == NO_OPTIONS:
            return self
        if self is NO_OPTIONS:
            return base
        updates = {name: getattr(self, name) for name in _FIELD_NAMES if getattr(self, name) is not None}
        return replace(base, **updates)

    def delay_ms(self, now: datetime | None = None) -> int:
        if self.run_at is not None:
            now = now or datetime.now(UTC)
            return max(0, int((self.run_at - now).total_seconds() * 1000))
        return int((self.delay or 0) * 1000)

    def stored(self) -> dict[str, Any]:
        """The part a worker needs, kept with the job (only what differs from the defaults)."""
        out: dict[str, Any] = {}
        if self.attempts is not None and self.attempts != 1:
            out["attempts"] = self.attempts
        if self.backoff is not None:
            out["backoff"] = self.backoff.to_json()
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.result_ttl is not None:
            out["result_ttl"] = self.result_ttl
        if self.failed_ttl is not None:
            out["failed_ttl"] = self.failed_ttl
        if self.group is not None:
            out["group"] = self.group
        if self.cost is not None:
            out["cost"] = self.cost
        if self.key is not None:
            out["key"] = self.key
            out["key_mode"] = self.key_mode
            if self.key_window is not None:
                out["key_window"] = self.key_window
        return out

    def keyed(self) -> tuple[str, str, int] | None:
        """(mode, key, window ms) of a keyed job, else None."""
        if self.key is None or self.key_mode is None:
            return None
        return self.key_mode, self.key, int((self.key_window or 0) * 1000)


NO_OPTIONS = JobOptions()
_FIELD_NAMES = frozenset(f.name for f in fields(JobOptions))


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for `Queue.add_bulk`: name, data and options."""

    name: str
    data: Any = None
    options: JobOptions = NO_OPTIONS

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any]) -> JobSpec:
        unknown = set(value) - {"name", "data", "options"}
        if unknown:
            raise InvalidOptionError(f"unknown job spec keys {sorted(unknown)}; use name, data, options")
        if "name" not in value:
            raise InvalidOptionError("job spec needs a 'name'")
        opts = value.get("options") or {}
        if isinstance(opts, JobOptions):
            return cls(value["name"], value.get("data"), opts)
        if not isinstance(opts, Mapping):
            raise InvalidOptionError("job spec 'options' must be a mapping")
        return cls(value["name"], value.get("data"), JobOptions.from_mapping(opts))
