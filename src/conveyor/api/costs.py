"""Cost per tenant (conveyor.costs; docs/llm.md, "Cost per tenant"): usage and cost per group, task and
day, prices and currency, and budgets. Reading needs the `read` scope; changes need `admin`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from conveyor.api.auth import AdminKey, ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.schemas import error_responses
from conveyor.api.state import get_state
from conveyor.costs import Budget, CostLedger, Price, UnknownTenantError
from conveyor.errors import ConfigurationError, ScriptInputError

router = APIRouter(prefix="/api", tags=["costs"])
T = TypeVar("T")
Amount = Decimal | None


def _ledger(request: Request) -> CostLedger:
    state = get_state(request)
    return CostLedger(state.client, state.prefix)


async def _call(op: Awaitable[T]) -> T:
    try:
        return await op
    except UnknownTenantError as exc:
        raise ApiError(404, str(exc), code="tenant_not_found") from None
    except (ConfigurationError, ScriptInputError) as exc:
        raise ApiError(422, str(exc), code="invalid_input") from None


def _day(value: str | None, name: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ApiError(422, f"{name} must be a date (YYYY-MM-DD), got {value[:40]!r}", code="invalid_input") from None


@router.get("/costs", responses=error_responses(401, 403, 404, 422, 429, 503),
            summary="Tokens and cost per tenant (group), task and day")
async def get_costs(
    request: Request, principal: ReadKey,
    group: str | None = Query(None, description="Only this tenant (404 when never seen)."),
    task: str | None = Query(None, max_length=200, description="Only this task."),
    since: str | None = Query(None, description="First day, YYYY-MM-DD (UTC); default 6 days before `until`."),
    until: str | None = Query(None, description="Last day, YYYY-MM-DD (UTC); default today."),
) -> dict[str, Any]:
    ledger = _ledger(request)
    return await _call(ledger.usage(group=group, task=task, since=_day(since, "since"), until=_day(until, "until")))


@router.get("/costs/settings", responses=error_responses(401, 403, 429, 503), summary="Currency, retention, prices")
async def get_cost_settings(request: Request, principal: ReadKey) -> dict[str, Any]:
    return await _ledger(request).settings()


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: str | None = Field(None, description="ISO 4217 code, e.g. USD (a label: nothing is converted).")
    retention_days: int | None = Field(None, description="Days a day bucket is kept, 1-3660.")


@router.patch("/costs/settings", responses=error_responses(401, 403, 422, 429, 503),
              summary="Set the currency or the retention")
async def patch_cost_settings(request: Request, body: SettingsIn, principal: AdminKey) -> dict[str, Any]:
    ledger = _ledger(request)
    if body.currency is not None:
        await _call(ledger.set_currency(body.currency))
    if body.retention_days is not None:
        await _call(ledger.set_retention(body.retention_days))
    return await ledger.settings()


class PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_million: Decimal = Field(description="Currency units per million input tokens.")
    output_per_million: Decimal = Field(description="Currency units per million output tokens.")


@router.put("/costs/prices/{model:path}", responses=error_responses(401, 403, 422, 429, 503),
            summary="Price a model ('*': the default price)")
async def put_price(request: Request, model: str, body: PriceIn, principal: AdminKey) -> dict[str, Any]:
    ledger = _ledger(request)
    try:
        price = Price(model, body.input_per_million, body.output_per_million)
    except ConfigurationError as exc:
        raise ApiError(422, str(exc), code="invalid_input") from None
    await ledger.set_price(price)
    return await ledger.settings()


@router.delete("/costs/prices/{model:path}", responses=error_responses(401, 403, 404, 422, 429, 503),
               summary="Remove a model's price")
async def delete_price(request: Request, model: str, principal: AdminKey) -> dict[str, Any]:
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
async def get_budget(request: Request, group: str, principal: ReadKey) -> dict[str, Any]:
    return await _call(_ledger(request).budget(group))


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    period: Literal["day", "month"] = "day"
    soft: Amount = Field(None, description="Currency units; crossing it sends a budget_soft event.")
    hard: Amount = Field(None, description="Currency units; at it the tenant's runs wait or fail.")
    on_hard: Literal["wait", "fail"] = "wait"
    estimate: Decimal = Field(Decimal(0), description="What one run is expected to cost (reserved while it runs).")


@router.put("/budgets/{group}", responses=error_responses(401, 403, 422, 429, 503),
            summary="Set a tenant's budget")
async def put_budget(request: Request, group: str, body: BudgetIn, principal: AdminKey) -> dict[str, Any]:
    ledger = _ledger(request)
    try:
        budget = Budget(period=body.period, soft=body.soft, hard=body.hard, on_hard=body.on_hard,
                        estimate=body.estimate)
    except ConfigurationError as exc:
        raise ApiError(422, str(exc), code="invalid_input") from None
    await _call(ledger.set_budget(group, budget))
    return await _call(ledger.budget(group))


@router.delete("/budgets/{group}", responses=error_responses(401, 403, 404, 422, 429, 503),
               summary="Remove a tenant's budget")
async def delete_budget(request: Request, group: str, principal: AdminKey) -> dict[str, Any]:
    await _call(_ledger(request).clear_budget(group))
    return {"group": group, "deleted": True}
