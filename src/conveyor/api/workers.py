"""`GET /api/workers`: live worker processes, read from the worker registry the service maintains
(`conveyor.service.registry`; layout in `conveyor.redis.keys.WorkerRegistryKeys`; view in `conveyor.views`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from conveyor.api.auth import ReadKey
from conveyor.api.schemas import WorkersOut, error_responses
from conveyor.api.state import get_state
from conveyor.views import list_workers

router = APIRouter(prefix="/api", tags=["workers"])


@router.get(
    "/workers",
    response_model=WorkersOut,
    responses=error_responses(401, 403, 429, 503),
    summary="Live worker processes",
)
async def get_workers(request: Request, principal: ReadKey) -> dict[str, Any]:
    state = get_state(request)
    return {"workers": await list_workers(state.client, state.prefix)}
