"""Cost per tenant (conveyor.costs; docs/llm.md, "Cost per tenant"): usage and cost per group, task and
day, prices and currency, and budgets. Reading needs the `read` scope; changes need `admin`."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from conveyor.api.auth import AdminKey, ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.schemas import error_responses
from conveyor.api.state import get_state
from conveyor.costs import Budget, CostLedger, Price, UnknownTenantError
from conveyor.costs.model import MAX_AMOUNT, MAX_ESTIMATE, MAX_PRICE, MAX_RETENTION_DAYS
from conveyor.errors import ConfigurationError, ScriptInputError

router = APIRouter(prefix="/api", tags=["costs"])
T = TypeVar("T")
# The bounds conveyor.costs.model checks, stated in the schema so a client sees them up front.
TENANT_PATTERN = r"^[A-Za-z0-9._:@/+=-]{1,200}$"
MODEL_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"
TASK_PATTERN = r"^[^\x00-\x1f\x7f]{1,200}$"


def _iso_day(value: Any) -> Any:
    """A day as the document states it (`format: date`, YYYY-MM-DD); pydantic's lax dates also take
    a number as a Unix time (`until=0` read as 1970-01-01), which no client means."""
    if not (isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value)):
        raise ValueError("a day is written YYYY-MM-DD")
    return value


Day = Annotated[dt.date, BeforeValidator(_iso_day)]


def _ledger(request: Request) -> CostLedger:
    state = get_state(request)
    return CostLedger(state.client, state.prefix)


@contextmanager
def _as_api_errors() -> Iterator[None]:
    """The ledger's refusals as the API's answers: an unknown tenant 404, a bad value 422."""
    try:
        yield
    except UnknownTenantError as exc:
        raise ApiError(404, str(exc), code="tenant_not_found") from None
    except (ConfigurationError, ScriptInputError) as exc:
        raise ApiError(422, str(exc), code="invalid_input") from None


async def _call(op: Awaitable[T]) -> T:
    with _as_api_errors():
        return await op


def _money(digits: int, maximum: int, description: str) -> Any:
    """An amount as a JSON number or as an exact decimal string ("2.50"), both bounded in the schema."""
    text = Annotated[str, StringConstraints(pattern=rf"^[0-9]{{1,{digits}}}(\.[0-9]{{1,9}})?$")]
    return Annotated[Annotated[float, Field(ge=0, le=maximum)] | text, Field(description=description)]


def _amount(value: float | str | None) -> Decimal | None:
    """The ledger's Decimal: a string as written, a number in its shortest form (0.1 stays 0.1)."""
    if value is None:
        return None
    return Decimal(value if isinstance(value, str) else repr(value))


@router.get("/costs", responses=error_responses(401, 403, 404, 422, 429, 503),
            summary="Tokens and cost per tenant (group), task and day")
async def get_costs(
    request: Request, principal: ReadKey,
    group: str | None = Query(None, pattern=TENANT_PATTERN, description="Only this tenant (404 when never seen)."),
    task: str | None = Query(None, pattern=TASK_PATTERN, description="Only this task."),
    since: Annotated[Day | None, Query(description="First day (UTC); default 6 days before `until`.")] = None,
    until: Annotated[Day | None, Query(description="Last day (UTC); default today. At most 400 days "
                                                   "from `since`, and not before it (422).")] = None,
) -> dict[str, Any]:
    ledger = _ledger(request)
    return await _call(ledger.usage(group=group, task=task, since=since, until=until))


@router.get("/costs/settings", responses=error_responses(401, 403, 429, 503), summary="Currency, retention, prices")
async def get_cost_settings(request: Request, principal: ReadKey) -> dict[str, Any]:
    return await _ledger(request).settings()


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$",
                                 description="ISO 4217 code, e.g. USD (a label: nothing is converted).")
    retention_days: int | None = Field(None, ge=1, le=MAX_RETENTION_DAYS, description="Days a day bucket is kept.")


@router.patch("/costs/settings", responses=error_responses(400, 401, 403, 422, 429, 503),
              summary="Set the currency or the retention")
async def patch_cost_settings(request: Request, body: SettingsIn, principal: AdminKey) -> dict[str, Any]:
    ledger = _ledger(request)
    if body.currency is not None:
        await _call(ledger.set_currency(body.currency))
    if body.retention_days is not None:
        await _call(ledger.set_retention(body.retention_days))
    return await ledger.settings()


class PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    input_per_million: _money(4, MAX_PRICE, "Currency units per million input tokens.")  # type: ignore[valid-type]
    output_per_million: _money(4, MAX_PRICE, "Currency units per million output tokens.")  # type: ignore[valid-type]


@router.put("/costs/prices/{model:path}", responses=error_responses(400, 401, 403, 422, 429, 503),
            summary="Price a model ('*': the default price)")
async def put_price(request: Request, body: PriceIn, principal: AdminKey,
                    model: str = Path(pattern=MODEL_PATTERN)) -> dict[str, Any]:
    ledger = _ledger(request)
    with _as_api_errors():
        price = Price(model, _amount(body.input_per_million) or 0, _amount(body.output_per_million) or 0)
    await ledger.set_price(price)
    return await ledger.settings()


@router.delete("/costs/prices/{model:path}", responses=error_responses(401, 403, 404, 422, 429, 503),
               summary="Remove a model's price")
async def delete_price(request: Request, principal: AdminKey,
                       model: str = Path(pattern=MODEL_PATTERN)) -> dict[str, Any]:
    if not await _call(_ledger(request).clear_price(model)):
        raise ApiError(404, f"model {model!r} has no price", code="price_not_found")
    return {"model": model, "deleted": True}


@router.get("/costs/events", responses=error_responses(401, 403, 429, 503), summary="Latest budget events")
async def get_cost_events(request: Request, principal: ReadKey,
                          count: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
    return {"events": await _ledger(request).events(count)}


@router.get("/budgets", responses=error_responses(401, 403, 429, 503), summary="Every tenant budget and its spend")
async def get_budgets(request: Request, principal: ReadKey) -> dict[str, Any]:
    return {"budgets": await _ledger(request).budgets()}


@router.get("/budgets/{group}", responses=error_responses(401, 403, 404, 422, 429, 503), summary="One budget")
async def get_budget(request: Request, principal: ReadKey,
                     group: str = Path(pattern=TENANT_PATTERN)) -> dict[str, Any]:
    return await _call(_ledger(request).budget(group))


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    period: Literal["day", "month"] = "day"
    soft: _money(9, MAX_AMOUNT, "Currency units; crossing it sends a budget_soft event.") | None = None  # type: ignore[valid-type]
    hard: _money(9, MAX_AMOUNT, "Currency units; at it the tenant's runs wait or fail. A budget has `soft`, "  # type: ignore[valid-type]
                 "`hard` or both, and `soft` is not above `hard` (422).") | None = None
    on_hard: Literal["wait", "fail"] = "wait"
    estimate: _money(6, MAX_ESTIMATE, "What one run is expected to cost (reserved while it runs).") = 0  # type: ignore[valid-type]


@router.put("/budgets/{group}", responses=error_responses(400, 401, 403, 422, 429, 503),
            summary="Set a tenant's budget")
async def put_budget(request: Request, body: BudgetIn, principal: AdminKey,
                     group: str = Path(pattern=TENANT_PATTERN)) -> dict[str, Any]:
    ledger = _ledger(request)
    with _as_api_errors():
        budget = Budget(period=body.period, soft=_amount(body.soft), hard=_amount(body.hard), on_hard=body.on_hard,
                        estimate=_amount(body.estimate) or 0)
    await _call(ledger.set_budget(group, budget))
    return await _call(ledger.budget(group))


@router.delete("/budgets/{group}", responses=error_responses(401, 403, 404, 422, 429, 503),
               summary="Remove a tenant's budget")
async def delete_budget(request: Request, principal: AdminKey,
                        group: str = Path(pattern=TENANT_PATTERN)) -> dict[str, Any]:
    await _call(_ledger(request).clear_budget(group))
    return {"group": group, "deleted": True}
