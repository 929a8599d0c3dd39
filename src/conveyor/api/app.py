"""`create_app(conveyor_app, settings)`: the ASGI app serving the HTTP API.

Layout: /api/... (routers below, plus the schedules room's router at /api/schedules), /openapi.json,
/docs and /redoc (served from installed files), and /dashboard reserved for the web UI
(`mount_dashboard` attaches its static files). Every response carries the security headers.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.staticfiles import StaticFiles

from conveyor import __version__
from conveyor.api import costs, flows, health, jobs, limiters, live, output, queues, sse, workers
from conveyor.api.auth import require, shows_data
from conveyor.api.body import ContentLengthLimit
from conveyor.api.docs import install_docs
from conveyor.api.drain import draining_on_exit_signals
from conveyor.api.errors import install_error_handlers, prepare_allowed_methods
from conveyor.api.head import HeadAsGet
from conveyor.api.keys import Scope
from conveyor.api.openapi import install_openapi
from conveyor.api.query import described_requests_only
from conveyor.api.schemas import error_responses
from conveyor.api.security import CrossSiteWrites, install_security_headers
from conveyor.api.state import ApiState
from conveyor.app import Conveyor
from conveyor.dashboard import mount as mount_dashboard_ui
from conveyor.errors import ConfigurationError
from conveyor.schedules.http import make_router as make_schedules_router
from conveyor.settings import Settings

logger = logging.getLogger(__name__)
DASHBOARD_PATH = "/dashboard"

DESCRIPTION = """Enqueue jobs, follow them to their end, and operate queues.

Authenticate with `Authorization: Bearer <key>` (`conveyor keys create`). Scopes: `enqueue`
(POST jobs), `read` (GET), `read-data` (payloads and results in responses; implies read),
`admin` (every scope, plus cancel/retry/promote/pause/resume/purge and schedule changes). Errors are
`{"error": {"code", "message", "details"}}`: 400 malformed JSON or header, 401 no/unknown key,
403 missing scope, 404 unknown queue/task/job, 409 idempotency conflict or wrong job state, 413 body
too large, 422 invalid payload or options (field errors in `details`), 429 rate limited
(`Retry-After`), 503 Redis unreachable.
"""


async def _check_eviction_policy(state: ApiState) -> None:
    try:
        config = await state.client.config_get("maxmemory-policy")
    except Exception:  # CONFIG may be disabled on managed servers; nothing to check then
        return
    policy = next(iter(config.values()), "") if isinstance(config, dict) else ""
    if policy and policy != "noeviction":
        logger.warning("Redis maxmemory-policy is %r: job keys may be evicted; set it to noeviction", policy)


def _use_settings_url(conveyor_app: Conveyor, settings: Settings) -> None:
    if not settings.redis_url:
        return
    try:
        current = conveyor_app.redis_url
    except ConfigurationError:
        current = None
    if current != settings.redis_url:
        conveyor_app.use_redis(settings.redis_url)


def _ops_routers() -> list[APIRouter]:
    # Imported here: these routes use this package's public names, as the dashboard does.
    from conveyor.alerts.http import router as alerts
    from conveyor.autoscaling.http import router as autoscaling

    return [alerts, autoscaling]


def create_app(conveyor_app: Conveyor, settings: Settings | None = None) -> FastAPI:
    """The API for the tasks and queues `conveyor_app` declares."""
    settings = settings or Settings.from_env()
    _use_settings_url(conveyor_app, settings)
    state = ApiState(conveyor_app, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _check_eviction_policy(state)
        prepare_allowed_methods(app)  # builds the OpenAPI document now, not on a first request
        # Objects made at start-up (modules, routes, schemas) live as long as the process: moved out of
        # the collector's reach, full collections stay short instead of pausing requests for tens of ms.
        gc.collect()
        gc.freeze()
        try:
            with draining_on_exit_signals(state.hub.drain) if state.drain_on_exit_signals else nullcontext():
                yield
        finally:
            await state.close()

    app = FastAPI(
        title=f"Conveyor API ({conveyor_app.name})",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served offline by install_docs
        redoc_url=None,
        dependencies=[Depends(described_requests_only)],
    )
    app.state.conveyor_api = state
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(flows.router)
    app.include_router(sse.router)
    app.include_router(output.router)
    app.include_router(live.router)
    app.include_router(jobs.plain_router)  # after every /jobs/{queue}/{id}/<suffix> route
    app.include_router(queues.router)
    app.include_router(workers.router)
    app.include_router(limiters.router)
    app.include_router(costs.router)
    for router in _ops_routers():
        app.include_router(router)
    read = require(Scope.READ)
    app.include_router(
        make_schedules_router(
            lambda: state.schedules, read, require(Scope.ADMIN), shows_data(read), conveyor_app.backoffs
        ),
        responses=error_responses(400, 401, 403, 404, 422, 429, 503),
    )
    mount_dashboard_ui(app)  # the web UI at /dashboard and its endpoints under /api/dashboard
    install_openapi(app, conveyor_app)
    install_docs(app)
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],  # every method a route serves
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "Retry-After"],
            max_age=600,
        )
    if not settings.api_auth:
        app.add_middleware(CrossSiteWrites, allowed_origins=origins)
    app.add_middleware(ContentLengthLimit, limit=settings.api_max_body_bytes)
    app.add_middleware(HeadAsGet)  # HEAD wherever GET is: routed as the GET, its body dropped
    install_security_headers(app)
    return app


def mount_dashboard(app: FastAPI, directory: Path) -> None:
    """Serve the dashboard's built files at /dashboard (the dashboard room calls this)."""
    app.mount(DASHBOARD_PATH, StaticFiles(directory=directory, html=True), name="dashboard")
