"""`GET /api/autoscaling[/queues/{queue}]` (JSON, for KEDA's metrics-api scaler) and
`GET /api/autoscaling/metrics` (Prometheus text, for Prometheus and KEDA's prometheus scaler).

Served by the API, which runs while workers are scaled to zero. Reads need the `read` scope.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from conveyor.api.auth import ReadKey
from conveyor.api.errors import ApiError
from conveyor.api.fanout import each_bounded
from conveyor.api.schemas import error_responses
from conveyor.api.state import ApiState, get_state
from conveyor.autoscaling.signals import (
    MAX_TARGET_S,
    MIN_TARGET_S,
    QueueSignal,
    queue_signal,
)
from conveyor.errors import ConfigurationError
from conveyor.redis.keys import validate_queue_name
from conveyor.service.registry import list_workers
from conveyor.views import queue_names

router = APIRouter(prefix="/api/autoscaling", tags=["autoscaling"])
TargetS = Annotated[
    float | None,
    Query(ge=MIN_TARGET_S, le=MAX_TARGET_S, description="Seconds in which the work present should be done "
          "(default CONVEYOR_AUTOSCALE_TARGET_S)."),
]
_READ = error_responses(401, 403, 404, 422, 429, 503)


async def signals(state: ApiState, names: list[str], target_s: float | None) -> list[QueueSignal]:
    target = target_s or state.settings.autoscale_target_s
    workers = await list_workers(state.client, state.prefix)
    configs = state.conveyor.queue_configs

    async def one(name: str) -> QueueSignal:  # each queue aged by the clock of its own node
        queue = await state.opened(name)
        declared = configs[name].concurrency if name in configs else None
        return await queue_signal(queue, workers=workers, declared_concurrency=declared, target_s=target)

    return await each_bounded(names, one)


@router.get("", responses=_READ, summary="Scaling signals of every queue")
async def all_signals(request: Request, principal: ReadKey, target_s: TargetS = None) -> dict[str, Any]:
    state = get_state(request)
    names = await queue_names(state.client, state.prefix, state.conveyor.queue_configs)
    return {"queues": [s.to_dict() for s in await signals(state, names, target_s)]}


class _Gauges(Collector):
    """The signals as gauges, computed when scraped (no state kept between scrapes)."""

    FIELDS = (
        ("backlog", "conveyor_queue_backlog", "Jobs waiting to start."),
        ("oldest_waiting_s", "conveyor_queue_oldest_waiting_seconds",
         "Age of the job at the head of the waiting list (0 when nothing waits)."),
        ("active", "conveyor_queue_active_jobs", "Jobs running now, fleet-wide."),
        ("mean_duration_s", "conveyor_queue_mean_job_duration_seconds",
         "Mean run time of the most recent finished jobs (absent until one finished)."),
        ("workers", "conveyor_queue_worker_processes", "Live worker processes serving the queue."),
        ("suggested_workers", "conveyor_queue_suggested_workers",
         "Worker processes the backlog calls for (formula in docs/deployment.md)."),
    )

    def __init__(self, rows: list[QueueSignal]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for field, name, text in self.FIELDS:
            family = GaugeMetricFamily(name, text, labels=["queue"])
            for row in self.rows:
                value = getattr(row, field)
                if value is None and field == "oldest_waiting_s":
                    value = 0.0
                if value is not None:
                    family.add_metric([row.queue], float(value))
            yield family


@router.get(
    "/metrics", responses=_READ, summary="Scaling signals as Prometheus gauges",
    response_class=Response,
)
async def metrics(request: Request, principal: ReadKey, target_s: TargetS = None) -> Response:
    state = get_state(request)
    names = await queue_names(state.client, state.prefix, state.conveyor.queue_configs)
    registry = CollectorRegistry()
    registry.register(_Gauges(await signals(state, names, target_s)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/queues/{queue}", responses=_READ, summary="Scaling signals of one queue")
async def one_signal(queue: str, request: Request, principal: ReadKey, target_s: TargetS = None) -> dict[str, Any]:
    state = get_state(request)
    try:
        validate_queue_name(queue)
    except ConfigurationError:
        raise ApiError(404, "no such queue") from None
    names = await queue_names(state.client, state.prefix, state.conveyor.queue_configs)
    if queue not in names:
        raise ApiError(404, f"queue {queue!r} does not exist")
    (signal,) = await signals(state, [queue], target_s)
    return signal.to_dict()
