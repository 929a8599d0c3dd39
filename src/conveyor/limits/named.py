"""Named limiters shared across queues and tasks: declarations, validated once (docs/limits.md).

A `Limiter` is a provider's budget, e.g. one API key and model: requests per period, tokens in, out
or in total per period, a concurrency cap and optionally an adaptive (AIMD) concurrency limit. A
`LimiterUse` says that a queue's or task's jobs go through a limiter, with an estimate of the tokens
one job costs; the handler's reported usage corrects the estimate when the job ends.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from conveyor import codec
from conveyor.errors import ConfigurationError, UsageReportError
from conveyor.limits.model import WINDOW_LOG_MAX, RateLimit

_NAME = re.compile(r"^[A-Za-z0-9._:/@-]{1,100}$")
MAX_TOKENS_PER_JOB = 10**9
MAX_CONCURRENCY = 100_000


def check_limiter_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(
            f"limiter name must be 1-100 characters of letters, digits and . _ : / @ -, got {name!r}")
    return name


def _tokens(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_PER_JOB:
        raise ConfigurationError(f"{name} must be an integer in [0, {MAX_TOKENS_PER_JOB}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Adaptive:
    """AIMD concurrency: start at `maximum`; each 429 or timeout (once per congestion episode)
    multiplies the limit by `decrease`; each run of `window` x limit successes adds `increase`;
    always within [minimum, maximum]."""

    maximum: int
    minimum: int = 1
    increase: float = 1.0
    decrease: float = 0.75
    window: float = 1.0

    def __post_init__(self) -> None:
        for name in ("maximum", "minimum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_CONCURRENCY:
                raise ConfigurationError(f"Adaptive.{name} must be an integer in [1, {MAX_CONCURRENCY}], got {v!r}")
        if self.minimum > self.maximum:
            raise ConfigurationError(f"Adaptive.minimum ({self.minimum}) is above maximum ({self.maximum})")
        checks = (("increase", 0.01, 1000.0), ("decrease", 0.01, 0.99), ("window", 0.01, 100.0))
        for name, lo, hi in checks:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
                raise ConfigurationError(f"Adaptive.{name} must be a number in [{lo}, {hi}], got {v!r}")

    def to_json(self) -> dict[str, Any]:
        return {"maximum": self.maximum, "minimum": self.minimum, "increase": self.increase,
                "decrease": self.decrease, "window": self.window}


@dataclass(frozen=True, slots=True)
class Limiter:
    """A named budget shared by every queue and task that uses it, fleet-wide."""

    name: str
    requests: RateLimit | None = None
    tokens_in: RateLimit | None = None
    tokens_out: RateLimit | None = None
    tokens: RateLimit | None = None  # input + output together
    concurrency: int | None = None
    adaptive: Adaptive | None = None

    def __post_init__(self) -> None:
        check_limiter_name(self.name)
        for name in ("requests", "tokens_in", "tokens_out", "tokens"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, RateLimit):
                raise ConfigurationError(f"Limiter.{name} must be a RateLimit, got {v!r}")
        c = self.concurrency
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= MAX_CONCURRENCY):
            raise ConfigurationError(f"Limiter.concurrency must be an integer in [1, {MAX_CONCURRENCY}], got {c!r}")
        if self.adaptive is not None and not isinstance(self.adaptive, Adaptive):
            raise ConfigurationError(f"Limiter.adaptive must be an Adaptive, got {self.adaptive!r}")
        if not any((self.requests, self.tokens_in, self.tokens_out, self.tokens, c, self.adaptive)):
            raise ConfigurationError(f"limiter {self.name!r} limits nothing")

    def to_json(self) -> dict[str, Any]:
        def rl(v: RateLimit | None) -> dict[str, Any] | None:
            return None if v is None else v.to_json()

        return {"requests": rl(self.requests), "tokens_in": rl(self.tokens_in), "tokens_out": rl(self.tokens_out),
                "tokens": rl(self.tokens), "concurrency": self.concurrency,
                "adaptive": None if self.adaptive is None else self.adaptive.to_json()}

    def fields(self) -> dict[str, str]:
        """The cfg hash the limiter scripts read (limits/lua/limiter.lua)."""
        out: dict[str, str] = {"cfg": codec.dumps(self.to_json()).decode()}
        dims = (("req", self.requests), ("tin", self.tokens_in), ("tout", self.tokens_out), ("tok", self.tokens))
        for dim, v in dims:
            if v is not None:
                out[f"{dim}_t"] = repr(v.interval_ms)
                out[f"{dim}_cap"] = str(v.capacity)
        if self.requests is not None and self.requests.limit + self.requests.burst <= WINDOW_LOG_MAX:
            out["req_n"] = str(self.requests.limit + self.requests.burst)
            out["req_w"] = repr(self.requests.per_s * 1000.0)
        if self.concurrency is not None:
            out["conc"] = str(self.concurrency)
        if self.adaptive is not None:
            a = self.adaptive
            out.update({"a_min": str(a.minimum), "a_max": str(a.maximum), "a_inc": repr(float(a.increase)),
                        "a_dec": repr(float(a.decrease)), "a_win": repr(float(a.window))})
        return out


@dataclass(frozen=True, slots=True)
class Estimate:
    """Tokens one job is expected to use; admission charges this, the reported usage corrects it."""

    tokens_in: int = 0
    tokens_out: int = 0

    def __post_init__(self) -> None:
        _tokens("Estimate.tokens_in", self.tokens_in)
        _tokens("Estimate.tokens_out", self.tokens_out)


@dataclass(frozen=True, slots=True)
class LimiterUse:
    """A queue's or task's use of the named limiter `name`, at `estimate` per job."""

    name: str
    estimate: Estimate = Estimate()

    def __post_init__(self) -> None:
        check_limiter_name(self.name)
        if not isinstance(self.estimate, Estimate):
            raise ConfigurationError(f"LimiterUse.estimate must be an Estimate, got {self.estimate!r}")


MAX_MODELS_PER_RUN = 20


@dataclass(frozen=True, slots=True)
class Usage:
    """What one run really used, as the provider reported it: totals (the named limiters) and the
    same tokens per model (cost accounting prices each model; '' is a model without a name).
    `estimated`: how many of those tokens (in and out) are an estimate, not a provider's report (a
    stream cut short reports none); the cost ledger shows that part beside its totals."""

    tokens_in: int = 0
    tokens_out: int = 0
    models: tuple[tuple[str, int, int], ...] = ()
    estimated: int = 0

    def __post_init__(self) -> None:
        for name in ("tokens_in", "tokens_out"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS_PER_JOB:
                raise UsageReportError(f"usage {name} must be an integer in [0, {MAX_TOKENS_PER_JOB}], got {v!r}")
        if len(self.models) > MAX_MODELS_PER_RUN:
            raise UsageReportError(f"usage names at most {MAX_MODELS_PER_RUN} models per run")
        for model, tin, tout in self.models:
            _check_model(model)
            for v in (tin, tout):
                if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS_PER_JOB:
                    raise UsageReportError(f"usage of {model!r} must be integers in [0, {MAX_TOKENS_PER_JOB}]")
        e = self.estimated
        if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= self.tokens_in + self.tokens_out:
            raise UsageReportError(f"usage estimated must be an integer in [0, tokens in + out], got {e!r}")
        if self.models and (sum(m[1] for m in self.models) != self.tokens_in
                            or sum(m[2] for m in self.models) != self.tokens_out):
            raise UsageReportError("usage per model does not add up to the totals")

    @classmethod
    def of(cls, tokens_in: int = 0, tokens_out: int = 0, model: str | None = None, *, estimated: bool = False) -> Usage:
        """One report, of one model when it is named; `estimated`: all of it is an estimate."""
        base = cls(tokens_in, tokens_out)
        est = tokens_in + tokens_out if estimated else 0  # both checked by `base`
        if model is None:
            return cls(tokens_in, tokens_out, estimated=est) if est else base
        return cls(tokens_in, tokens_out, ((_check_model(model), tokens_in, tokens_out),), est)

    def plus(self, other: Usage) -> Usage:
        """Both runs' usage together (per model summed)."""
        per: dict[str, list[int]] = {}
        for model, tin, tout in (*self.by_model(), *other.by_model()):
            cur = per.setdefault(model, [0, 0])
            cur[0] += tin
            cur[1] += tout
        models = tuple((m, v[0], v[1]) for m, v in per.items() if m or v != [0, 0])
        return Usage(self.tokens_in + other.tokens_in, self.tokens_out + other.tokens_out, models,
                     self.estimated + other.estimated)

    def by_model(self) -> tuple[tuple[str, int, int], ...]:
        """Tokens per model; tokens reported without a model come under ''."""
        if self.models:
            return self.models
        return (("", self.tokens_in, self.tokens_out),) if self.tokens_in or self.tokens_out else ()


def _check_model(model: object) -> str:
    if not isinstance(model, str) or len(model) > 200 or any(ord(c) < 32 or ord(c) == 127 for c in model):
        raise UsageReportError(f"model must be at most 200 printable characters, got {model!r}")
    return model


def merge_uses(uses: list[LimiterUse]) -> list[LimiterUse]:
    """One use per limiter name (the largest estimate of each), sorted by name: admission charges
    limiters in this order, so two workers never wait on each other in opposite orders."""
    best: dict[str, LimiterUse] = {}
    for use in uses:
        cur = best.get(use.name)
        if cur is None:
            best[use.name] = use
        else:
            best[use.name] = LimiterUse(use.name, Estimate(max(cur.estimate.tokens_in, use.estimate.tokens_in),
                                                           max(cur.estimate.tokens_out, use.estimate.tokens_out)))
    return [best[n] for n in sorted(best)]
