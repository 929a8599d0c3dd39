"""Backoff policies: how long a failed attempt waits before the next one.

Policies are stored with the job as JSON, so any worker process can apply them. A callable policy is
stored by reference (`module:qualname`) and imported by the worker, so it must be importable there.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.errors import InvalidOptionError

BackoffFunction = Callable[[int, BaseException | None], float]


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
        delay = min(self.max, self.base * self.factor ** max(0, attempt - 1))
        if self.jitter:
            delay = delay / 2 + random.uniform(0, delay / 2)
        return delay

    def to_json(self) -> dict[str, Any]:
        return {"type": "exponential", "base": self.base, "factor": self.factor, "max": self.max,
                "jitter": self.jitter}


@dataclass(frozen=True, slots=True)
class Custom:
    """A function `(attempt, error) -> seconds`, referenced as `module:qualname`."""

    ref: str

    @classmethod
    def of(cls, fn: BackoffFunction) -> Custom:
        module = getattr(fn, "__module__", None)
        qualname = getattr(fn, "__qualname__", "")
        if not module or "<" in qualname:
            raise InvalidOptionError(
                "a backoff function must be a module-level function so workers can import it "
                f"(got {fn!r})"
            )
        return cls(f"{module}:{qualname}")

    def resolve(self) -> BackoffFunction:
        module_name, _, qualname = self.ref.partition(":")
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        if not callable(obj):
            raise InvalidOptionError(f"backoff reference {self.ref!r} is not callable")
        return obj  # type: ignore[no-any-return]

    def seconds(self, attempt: int, error: BaseException | None = None) -> float:
        value = float(self.resolve()(attempt, error))
        return max(0.0, value)

    def to_json(self) -> dict[str, Any]:
        return {"type": "callable", "ref": self.ref}


Backoff = Fixed | Exponential | Custom


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InvalidOptionError(f"backoff {name} must be a number >= 0, got {value!r}")
    return float(value)


def parse_backoff(value: Any) -> Backoff:
    """Accepts seconds (fixed), 'exponential', a mapping with 'type', a Backoff or a function."""
    if isinstance(value, Fixed | Exponential | Custom):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Fixed(_non_negative("delay", value))
    if value == "exponential":
        return Exponential()
    if isinstance(value, Mapping):
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
            factor = _non_negative("factor", rest.get("factor", 2.0))
            if factor < 1:
                raise InvalidOptionError("exponential backoff factor must be >= 1")
            return Exponential(
                base=_non_negative("base", rest.get("base", 1.0)),
                factor=factor,
                max=_non_negative("max", rest.get("max", 3600.0)),
                jitter=bool(rest.get("jitter", True)),
            )
        if kind == "callable" and isinstance(rest.get("ref"), str) and set(rest) == {"ref"}:
            return Custom(rest["ref"])
        raise InvalidOptionError(f"unknown backoff {dict(value)!r}")
    if callable(value):
        return Custom.of(value)
    raise InvalidOptionError(f"unknown backoff {value!r}: use seconds, 'exponential', a mapping or a function")
