"""Live workers, read from the worker registry (`conveyor.redis.keys.WorkerRegistryKeys`).

The service room owns the registry and its writer. When `conveyor.service.registry.list_workers`
is installed the API uses it; until then `read_workers` below reads the same fixed layout: a zset
of worker ids scored by last heartbeat (ms) and one JSON record per worker with a TTL.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request

from conveyor.api.auth import ReadKey
from conveyor.api.schemas import WorkersOut, error_responses
from conveyor.api.state import get_state
from conveyor.redis.connection import RedisClient
from conveyor.redis.keys import WorkerRegistryKeys

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["workers"])
MAX_WORKERS = 1000

ListWorkers = Callable[[RedisClient, str], Awaitable[Any]]


async def read_workers(client: RedisClient, prefix: str = "cv") -> list[dict[str, Any]]:
    """Records of live workers, most recent heartbeat first; entries whose record expired are skipped."""
    keys = WorkerRegistryKeys(prefix)
    ids = [str(i) for i in await client.zrevrange(keys.index, 0, MAX_WORKERS - 1)]
    if not ids:
        return []
    raws = await client.mget([keys.worker(i) for i in ids])
    out = []
    for worker_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("worker registry record %s is not JSON; skipped", worker_id)
            continue
        if isinstance(record, dict):
            record.setdefault("id", worker_id)
            out.append(record)
    return out


def _service_reader() -> ListWorkers | None:
    try:
        module = importlib.import_module("conveyor.service.registry")
    except ImportError:
        return None
    reader = getattr(module, "list_workers", None)
    return reader if callable(reader) else None


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    to_dict = getattr(item, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(vars(item))


async def list_workers(client: RedisClient, prefix: str) -> list[dict[str, Any]]:
    reader = _service_reader()
    if reader is None:
        return await read_workers(client, prefix)
    return [_as_dict(w) for w in await reader(client, prefix)]


@router.get(
    "/workers",
    response_model=WorkersOut,
    responses=error_responses(401, 403, 429, 503),
    summary="Live worker processes",
)
async def get_workers(request: Request, principal: ReadKey) -> dict[str, Any]:
    state = get_state(request)
    return {"workers": await list_workers(state.client, state.prefix)}
