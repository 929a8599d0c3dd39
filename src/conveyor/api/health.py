"""`GET /api/health`: open to all, 503 when Redis does not answer a PING within two seconds."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from conveyor import __version__
from conveyor.api.responses import JSONBody
from conveyor.api.schemas import HealthOut
from conveyor.api.state import get_state

router = APIRouter(prefix="/api", tags=["health"])
PING_TIMEOUT_S = 2.0


@router.get(
    "/health",
    response_model=HealthOut,
    summary="API and Redis reachability",
    responses={503: {"model": HealthOut, "description": "Redis is unreachable"}},
)
async def health(request: Request) -> JSONBody:
    try:
        await asyncio.wait_for(get_state(request).client.ping(), PING_TIMEOUT_S)
    except Exception:  # any failure to get a PONG means "unreachable"; details stay in the logs
        return JSONBody(
            {"status": "unavailable", "redis": "unreachable", "version": __version__}, status_code=503
        )
    return JSONBody({"status": "ok", "redis": "ok", "version": __version__})
