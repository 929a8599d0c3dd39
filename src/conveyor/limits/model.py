"""Limit declarations: validated once, then encoded as the fields the claim script reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ConfigurationError

MAX_LIMIT = 10**12
MAX_PERIOD_S = 86_400.0 * 366
# Under 1 ms, per_s / limit may round to a pace of 0 ms: a limiter that limits nothing.
MIN_PERIOD_S = 0.001
MAX_WEIGHT = 1000.0
# A pass advances by 1 / weight per claim and the virtual time follows it; far smaller weights make
# the passes of groups that join later round to one number (the rotation then serves one of them).
MIN_WEIGHT = 0.001
# Rate limits up to this many starts per window (limit + burst) are also held by a sliding-window log
# (exact in every window of per_s); larger ones by the GCRA alone (docs/limits.md).
WINDOW_LOG_MAX = 10_000


def _positive(name: str, value: Any, *, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if not 0 < value <= maximum:
        raise ConfigurationError(f"{name} must be > 0 and <= {maximum:g}, got {value!r}")
    return float(value)


def _count(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_LIMIT:
        raise ConfigurationError(f"{name} must be an integer in [{minimum}, {MAX_LIMIT}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`limit` units per `per_s` seconds, paced evenly (GCRA); `burst` more may start back to back.

    A rested limiter lets `burst + 1` units start at once; after that one unit every
    `per_s / limit` seconds. Any window of `per_s` seconds sees at most `limit + burst` units
    (for cost limits, a single job larger than `burst + 1` waits for a rested limiter and leaves it
    in debt, so the bound there is `limit + max(burst, largest cost - 1)`).
    """

    limit: int
    per_s: float = 1.0
    burst: int = 0

    def __post_init__(self) -> None:
        _count("RateLimit.limit", self.limit, minimum=1)
        per_s = _positive("RateLimit.per_s", self.per_s, maximum=MAX_PERIOD_S)
        if per_s < MIN_PERIOD_S:
            raise ConfigurationError(
                f"RateLimit.per_s must be >= {MIN_PERIOD_S:g} and <= {MAX_PERIOD_S:g}, got {self.per_s!r}")
        object.__setattr__(self, "per_s", per_s)
        _count("RateLimit.burst", self.burst, minimum=0)

    @property
    def interval_ms(self) -> float:
        """Milliseconds per unit at the steady pace."""
        return self.per_s * 1000.0 / self.limit

    @property
    def capacity(self) -> int:
        """Units that may start at once from a rested limiter."""
        return self.burst + 1

    def fields(self, prefix: str) -> dict[str, str]:
        out = {f"{prefix}_t": repr(self.interval_ms), f"{prefix}_cap": str(self.capacity)}
        if prefix.endswith("rate") and self.limit + self.burst <= WINDOW_LOG_MAX:
            # The claim keeps a log of the last limit + burst starts: no window of per_s exceeds it.
            out[f"{prefix}_n"] = str(self.limit + self.burst)
            out[f"{prefix}_w"] = repr(self.per_s * 1000.0)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "per_s": self.per_s, "burst": self.burst}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RateLimit:
        return cls(int(value["limit"]), float(value["per_s"]), int(value.get("burst", 0)))


@dataclass(frozen=True, slots=True)
class GroupLimits:
    """Limits for each group (queue-wide defaults, or one group's overrides). None = no limit
    (for an override: fall back to the queue's group defaults)."""

    concurrency: int | None = None
    rate: RateLimit | None = None
    cost: RateLimit | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            _count("concurrency", self.concurrency, minimum=1)
        for name in ("rate", "cost"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, RateLimit):
                raise ConfigurationError(f"{name} must be a RateLimit, got {value!r}")

    def fields(self, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        if self.concurrency is not None:
            out[prefix + "conc"] = str(self.concurrency)
        if self.rate is not None:
            out.update(self.rate.fields(prefix + "rate"))
        if self.cost is not None:
            out.update(self.cost.fields(prefix + "cost"))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "rate": None if self.rate is None else self.rate.to_json(),
            "cost": None if self.cost is None else self.cost.to_json(),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> GroupLimits | None:
        if not value:
            return None
        return cls(
            value.get("concurrency"),
            RateLimit.from_json(value["rate"]) if value.get("rate") else None,
            RateLimit.from_json(value["cost"]) if value.get("cost") else None,
        )


def limiter_fields(prefix: str) -> list[str]:
    """Every hash field a GroupLimits encoding may use under `prefix`."""
    return [prefix + f for f in ("conc", "rate_t", "rate_cap", "rate_n", "rate_w", "cost_t", "cost_cap")]


def check_weight(weight: Any) -> float:
    w = _positive("weight", weight, maximum=MAX_WEIGHT)
    if w < MIN_WEIGHT:
        raise ConfigurationError(f"weight must be >= {MIN_WEIGHT:g} and <= {MAX_WEIGHT:g}, got {weight!r}")
    return w
