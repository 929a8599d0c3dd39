"""Backoff policies: how long a failed attempt waits before the next one.

Policies are stored with the job as JSON data, so any worker process can apply them. Options come
from callers, HTTP bodies, schedules and Redis, so they are data and never code: a policy written as
a function is registered by the application under a name (`app.backoff_policy(name, fn)`), the job
stores only `{"type": "named", "name": ...}`, and a worker runs only functions its own application
registered. Nothing read from a job is ever imported.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import ConfigurationError, InvalidOptionError

BackoffFunction = Callable[[int, BaseException | None], float]
POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")


@dataclass(frozen=True, slots=True)
class Fixed:
    """The same wait before every retry."""

    delay: float

    def seconds(self, attempt: int, error: BaseException | None = None) -> float:
        return self.delay

    def to_json(self) -> dict[str, Any]:
        return {"type": "fixed", "delay": self.delay}


@dataclass(frozen=True, slots=True)
class Exponential:
    """base * factor**(attempt-1), capped at `max`; with jitter, a uniform pick in [d/2, d]."""

    base: float = 1.0
    factor: float = 2.0
    max: float = 3600.0
    jitter: bool = True

    def seconds(self, attempt: int, error: BaseException | None = None) -> float:
        try:
            grown = self.base * self.factor ** max(0, attempt - 1)
        except OverflowError:  # a large factor over many attempts: the cap applies
            grown = math.inf
        delay = min(self.max, grown)
        if self.jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay

    def to_json(self) -> dict[str, Any]:
        return {"type": "exponential", "base": self.base, "factor": self.factor, "max": self.max,
                "jitter": self.jitter}


@dataclass(frozen=True, slots=True)
class Named:
    """A policy the application registered under `name` (`app.backoff_policy`); only the name is stored."""

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not POLICY_NAME.match(self.name):
            raise InvalidOptionError(
                f"backoff policy name {self.name!r}: 1-100 letters, digits, '.', '_', ':' or '-'"
            )

    def to_json(self) -> dict[str, Any]:
        return {"type": "named", "name": self.name}


Backoff = Fixed | Exponential | Named


class BackoffPolicies:
    """The named backoff functions one application declares; workers resolve names only here."""

    def __init__(self) -> None:
        self._functions: dict[str, BackoffFunction] = {}

    def register(self, name: str, fn: BackoffFunction) -> Named:
        ref = Named(name)
        if not callable(fn):
            raise ConfigurationError(f"backoff policy {name!r} must be a function (attempt, error) -> seconds")
        if name in self._functions and self._functions[name] is not fn:
            raise ConfigurationError(f"backoff policy {name!r} is registered twice")
        self._functions[name] = fn
        return ref

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._functions

    def __iter__(self) -> Iterator[str]:
        return iter(self._functions)

    def seconds(self, policy: Backoff, attempt: int, error: BaseException | None = None) -> float:
        """The wait `policy` asks for; a Named policy must be registered here (else InvalidOptionError)."""
        if not isinstance(policy, Named):
            return policy.seconds(attempt, error)
        fn = self._functions.get(policy.name)
        if fn is None:
            raise InvalidOptionError(f"no backoff policy named {policy.name!r} is registered by this application")
        return max(0.0, float(fn(attempt, error)))


BACKOFF_SECONDS_MAX = 3_155_760_000.0  # 100 years, as every other duration option
FACTOR_MAX = 100.0


def _non_negative(name: str, value: Any, high: float = BACKOFF_SECONDS_MAX) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high:
        raise InvalidOptionError(f"backoff {name} must be a number in [0, {high:g}], got {repr(value)[:40]}")
    return float(value)


_CODE_REFUSED = (
    "a backoff is data, never code: register the function with app.backoff_policy(name, fn) and pass the "
    "Named policy it returns (stored as {'type': 'named', 'name': ...})"
)


def parse_backoff(value: Any) -> Backoff:
    """Accepts seconds (fixed), 'exponential', a mapping with 'type' or a Backoff; refuses functions."""
    if isinstance(value, Fixed | Exponential | Named):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Fixed(_non_negative("delay", value))
    if value == "exponential":
        return Exponential()
    if isinstance(value, Mapping):
        return _from_mapping(value)
    if callable(value):
        raise InvalidOptionError(_CODE_REFUSED)
    raise InvalidOptionError(
        f"unknown backoff {repr(value)[:40]}: use seconds, 'exponential', a mapping or a Named policy"
    )


def _from_mapping(value: Mapping[str, Any]) -> Backoff:
    kind = value.get("type")
    rest = {k: v for k, v in value.items() if k != "type"}
    if kind == "fixed":
        if set(rest) != {"delay"}:
            raise InvalidOptionError("fixed backoff takes exactly {'type': 'fixed', 'delay': seconds}")
        return Fixed(_non_negative("delay", rest["delay"]))
    if kind == "exponential":
        unknown = set(rest) - {"base", "factor", "max", "jitter"}
        if unknown:
            raise InvalidOptionError(f"unknown exponential backoff keys: {sorted(unknown)}")
        factor = _non_negative("factor", rest.get("factor", 2.0), FACTOR_MAX)
        if factor < 1:
            raise InvalidOptionError("exponential backoff factor must be >= 1")
        return Exponential(
            base=_non_negative("base", rest.get("base", 1.0)),
            factor=factor,
            max=_non_negative("max", rest.get("max", 3600.0)),
            jitter=bool(rest.get("jitter", True)),
        )
    if kind == "named":
        if set(rest) != {"name"}:
            raise InvalidOptionError("a named backoff is exactly {'type': 'named', 'name': policy}")
        return Named(rest["name"])
    if kind == "callable":
        raise InvalidOptionError(_CODE_REFUSED)
    raise InvalidOptionError(f"unknown backoff type {str(kind)[:50]!r}: use fixed, exponential or named")
