"""Cost accounting declarations: prices, budgets and money, validated before anything is written.

Money is kept in nano-units (1e-9) of one configured currency, as integers, so totals add up
exactly; `Decimal` (or an int, float or string) goes in, numbers and exact nano counts come out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from conveyor.errors import ConfigurationError, ConveyorError

NANO = 10**9
MAX_PRICE = 10_000  # currency units per 1M tokens (the dearest models cost well under 1,000)
MAX_AMOUNT = 10**9  # currency units in one budget
MAX_ESTIMATE = 10**6  # currency units one run is expected to cost
MAX_RETENTION_DAYS = 3660
DEFAULT_RETENTION_DAYS = 90
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_MODEL = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")
_TENANT = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,200}$")  # as group names (job options)

Period = Literal["day", "month"]
OnHard = Literal["wait", "fail"]


class UnknownTenantError(ConveyorError, LookupError):
    """No usage was ever recorded for the tenant (group) and it has no budget."""


class BudgetExceededError(ConveyorError):
    """A tenant's hard budget is spent for the current period (raised as a job's failure when the
    budget says `on_hard="fail"`)."""


def to_nano(value: Any, what: str, maximum: int) -> int:
    """Currency units (Decimal, int, float or a decimal string) -> nano-units; ConfigurationError
    for negative, non-finite, absurd or unparsable values."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise ConfigurationError(f"{what} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{what} must be finite, got {value!r}")
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ConfigurationError(f"{what} must be a number, got {value!r}") from None
    if not amount.is_finite() or amount < 0 or amount > maximum:
        raise ConfigurationError(f"{what} must be in [0, {maximum}], got {value!r}")
    return int((amount * NANO).to_integral_value())


def from_nano(nano: int) -> float:
    """Nano-units -> currency units, for JSON (exact counts are given beside as `*_nano`)."""
    return round(nano / NANO, 9)


def check_tenant(tenant: Any) -> str:
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise ConfigurationError(
            f"tenant (group) must be 1-200 characters of letters, digits and . _ : @ / + = -, got {tenant!r}")
    return tenant


def check_currency(code: Any) -> str:
    if not isinstance(code, str) or not _CURRENCY.match(code):
        raise ConfigurationError(f"currency must be a three-letter ISO 4217 code such as USD, got {code!r}")
    return code


def check_model(model: Any) -> str:
    """A model name as priced: any 1-200 printable characters; '*' is the default price."""
    if not isinstance(model, str) or not _MODEL.match(model):
        raise ConfigurationError(f"model must be 1-200 printable characters, got {model!r}")
    return model


def check_retention(days: Any) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise ConfigurationError(f"retention_days must be an integer in [1, {MAX_RETENTION_DAYS}], got {days!r}")
    return days


@dataclass(frozen=True, slots=True)
class Price:
    """What one model costs, in currency units per million tokens in and out."""

    model: str
    input_per_million: Decimal | int | float | str
    output_per_million: Decimal | int | float | str

    def __post_init__(self) -> None:
        check_model(self.model)
        self.nano()

    def nano(self) -> tuple[int, int]:
        """Nano-units per million tokens (in, out)."""
        return (to_nano(self.input_per_million, "input_per_million", MAX_PRICE),
                to_nano(self.output_per_million, "output_per_million", MAX_PRICE))


@dataclass(frozen=True, slots=True)
class Budget:
    """A tenant's budget per UTC day or month. Crossing `soft` sends one `budget_soft` event per
    period (and fires `tenant_budget` alert rules); at `hard` the tenant's runs stop being admitted:
    `on_hard="wait"` puts them back until the next period (the tenant's group is blocked meanwhile),
    `"fail"` fails them with BudgetExceededError. `estimate`: what one run is expected to cost; it is
    reserved while the run goes, so runs starting together cannot overshoot `hard` by more than
    their cost beyond the estimate."""

    period: Period = "day"
    soft: Decimal | int | float | str | None = None
    hard: Decimal | int | float | str | None = None
    on_hard: OnHard = "wait"
    estimate: Decimal | int | float | str = 0

    def __post_init__(self) -> None:
        if self.period not in ("day", "month"):
            raise ConfigurationError(f"budget period must be 'day' or 'month', got {self.period!r}")
        if self.on_hard not in ("wait", "fail"):
            raise ConfigurationError(f"on_hard must be 'wait' or 'fail', got {self.on_hard!r}")
        if self.soft is None and self.hard is None:
            raise ConfigurationError("a budget needs a soft limit, a hard limit or both")
        soft, hard = self.nano_limits()
        if soft is not None and hard is not None and soft > hard:
            raise ConfigurationError(f"the soft limit ({self.soft}) is above the hard limit ({self.hard})")
        to_nano(self.estimate, "estimate", MAX_ESTIMATE)

    def nano_limits(self) -> tuple[int | None, int | None]:
        return (None if self.soft is None else to_nano(self.soft, "soft", MAX_AMOUNT),
                None if self.hard is None else to_nano(self.hard, "hard", MAX_AMOUNT))

    def to_json(self) -> dict[str, Any]:
        return {"period": self.period, "soft": None if self.soft is None else str(self.soft),
                "hard": None if self.hard is None else str(self.hard), "on_hard": self.on_hard,
                "estimate": str(self.estimate)}


@dataclass(frozen=True, slots=True)
class Admission:
    """May a run start: None when admitted, else why not and until when."""

    tenant: str
    wait_ms: int  # until the next period starts (busy: until it is worth asking again)
    spent_nano: int
    hard_nano: int
    on_hard: OnHard
    period: Period
    period_id: str
    # Not over the budget: the running runs' reservations fill it until they record what they cost.
    busy: bool = False
    reserved_nano: int = 0

    @property
    def message(self) -> str:
        if self.busy:
            return (f"the hard budget of {from_nano(self.hard_nano):g} of tenant {self.tenant!r} for this "
                    f"{self.period} is held by its running runs (spent {from_nano(self.spent_nano):g}, "
                    f"reserved {from_nano(self.reserved_nano):g}); asking again in {self.wait_ms / 1000:.0f} s")
        return (f"tenant {self.tenant!r} is over its hard budget of {from_nano(self.hard_nano):g} for this "
                f"{self.period} (spent {from_nano(self.spent_nano):g}); the next {self.period} starts in "
                f"{self.wait_ms / 1000:.0f} s")
