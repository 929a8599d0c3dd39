"""`GET /api/limiters` and `GET /api/limiters/{name}`: named limiters shared by queues, their state
and the last hour's usage per minute (conveyor.limits.shared; docs/limits.md, "Named limiters")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.schemas import error_responses
from conveyor.api.state import get_state
from conveyor.errors import ConfigurationError, UnknownLimiterError
from conveyor.limits.shared import SharedLimiter, limiter_names

router = APIRouter(prefix="/api", tags=["limiters"])
MAX_LISTED = 200


@router.get("/limiters", responses=error_responses(401, 403, 429, 503), summary="Named limiters and their usage")
async def get_limiters(request: Request, principal: ReadKey) -> dict[str, Any]:
    state = get_state(request)
    names = sorted(set(await limiter_names(state.client, state.prefix)) | set(state.conveyor.limiters))
    out = []
    for name in names[:MAX_LISTED]:
        try:
            out.append(await SharedLimiter(state.client, name, state.prefix).state())
        except (UnknownLimiterError, ConfigurationError):
            continue  # declared in code, not yet written by a worker; or a bad name in the index
    return {"limiters": out, "truncated": len(names) > MAX_LISTED}


@router.get("/limiters/{name}", responses=error_responses(401, 403, 404, 429, 503), summary="One named limiter")
async def get_limiter(request: Request, name: str, principal: ReadKey) -> dict[str, Any]:
    state = get_state(request)
    try:
        return await SharedLimiter(state.client, name, state.prefix).state()
    except (UnknownLimiterError, ConfigurationError):
        raise ApiError(404, f"no limiter named {name!r}", code="limiter_not_found") from None
