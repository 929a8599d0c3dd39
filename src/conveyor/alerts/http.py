"""`GET /api/alerts` (read), `PUT /api/alerts` (admin: replaces the rules defined through the API),
`DELETE /api/alerts/{id}` (admin). Channel URLs (a Slack webhook URL is a secret) are shown in full
to admin keys only."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from conveyor.alerts.channels import redact_url
from conveyor.alerts.rules import KIND_NAMES, MAX_RULES, RULE_ID, Rule, rule_json
from conveyor.alerts.state import Status
from conveyor.alerts.store import AlertInfo, AlertStore, RuleConflictError
from conveyor.api.auth import AdminKey, Principal, ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.keys import Scope
from conveyor.api.schemas import error_responses
from conveyor.api.state import get_state

router = APIRouter(prefix="/api/alerts", tags=["alerts"])
HISTORY_SHOWN = 50


class AlertsIn(BaseModel):
    """Every rule defined through the API (rules declared in code are not touched). Strict, as the
    rule models are (alerts/rules.py): a value of another JSON type than the schema states is a 422."""

    model_config = ConfigDict(extra="forbid", strict=True)
    rules: list[Rule] = Field(max_length=MAX_RULES)


class AlertOut(BaseModel):
    rule: dict[str, Any] = Field(description="The rule; channel URLs shortened for keys without admin.")
    source: str = Field(description="code (declared in the app) or api.")
    state: dict[str, Any] = Field(description="status (ok, pending, firing), since_ms, fired_ms, notified_ms, "
                                  "episode, seq, value, summary, evaluated_ms, error, cleared_ms, flaps.")


class AlertsOut(BaseModel):
    rules: list[AlertOut]
    active: list[AlertOut] = Field(description="The rules firing now.")
    recent: list[dict[str, Any]] = Field(description="The latest notices (fired, repeat, resolved), newest first.")
    kinds: list[str]


def _store(request: Request) -> AlertStore:
    state = get_state(request)
    return AlertStore(state.client, state.prefix)


def _out(info: AlertInfo, admin: bool) -> dict[str, Any]:
    rule = rule_json(info.rule)
    if not admin:
        rule["channels"] = [{**c, "url": redact_url(c["url"])} if c.get("url") else c for c in rule["channels"]]
    return {"rule": rule, "source": info.source, "state": asdict(info.state)}


async def alerts_view(store: AlertStore, principal: Principal) -> dict[str, Any]:
    admin = principal.can(Scope.ADMIN)
    infos = await store.all()
    rules = [_out(i, admin) for i in infos]
    active = [r for r, i in zip(rules, infos, strict=True) if i.state.status is Status.FIRING]
    return {"rules": rules, "active": active, "recent": await store.history(HISTORY_SHOWN), "kinds": list(KIND_NAMES)}


@router.get("", response_model=AlertsOut, responses=error_responses(401, 403, 429, 503), summary="Alert rules, "
            "active alerts and recent notices")
async def get_alerts(request: Request, principal: ReadKey) -> dict[str, Any]:
    return await alerts_view(_store(request), principal)


@router.put("", response_model=AlertsOut, responses=error_responses(400, 401, 403, 409, 422, 429, 503),
            summary="Replace the rules defined through the API")
async def put_alerts(body: AlertsIn, request: Request, principal: AdminKey) -> dict[str, Any]:
    store = _store(request)
    try:
        await store.put_rules(body.rules, source="api", replace=True)
    except RuleConflictError as exc:
        raise ApiError(409, str(exc)) from None
    return await alerts_view(store, principal)


@router.delete("/{rule_id}", status_code=204, responses=error_responses(401, 403, 404, 429, 503),
               summary="Delete one rule (of either source) and its state")
async def delete_alert(rule_id: str, request: Request, principal: AdminKey) -> Response:
    if not re.match(RULE_ID, rule_id) or not await _store(request).delete_rule(rule_id):
        raise ApiError(404, "no such alert rule")
    return Response(status_code=204)
