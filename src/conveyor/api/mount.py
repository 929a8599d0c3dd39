"""Conveyor's HTTP API and dashboard inside an existing FastAPI or Starlette app.

    app = FastAPI(lifespan=my_lifespan)
    mount(app, jobs, path="/conveyor")      # API at /conveyor/api/..., dashboard at /conveyor/dashboard/

A thin layer over `create_app`: Starlette does not run a mounted app's lifespan, so `mount` wraps the
host app's lifespan to enter the Conveyor API's own (Redis checks on start, connections closed on
stop) inside it. `lifespan(api)` is the same context for hosts that compose lifespans themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.applications import Starlette

from conveyor.api.app import create_app
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.settings import Settings

DEFAULT_PATH = "/conveyor"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Any]]


def lifespan(api: FastAPI) -> AbstractAsyncContextManager[Any]:
    """The Conveyor API's start-up and shut-down, for a host that runs it inside its own lifespan."""
    return api.router.lifespan_context(api)


def mount(
    host: Starlette,
    conveyor_app: Conveyor,
    *,
    path: str = DEFAULT_PATH,
    settings: Settings | None = None,
) -> FastAPI:
    """Serve the API and dashboard of `conveyor_app` under `path` of `host`, sharing its lifespan.

    Returns the mounted API app (its `app.state.conveyor_api` holds the API's state). Settings come
    from the environment unless given, as for `conveyor api`; API keys are Conveyor's own.
    """
    if not path.startswith("/") or path.endswith("/") or len(path) < 2:
        raise ConfigurationError(f"mount path must look like '/conveyor', got {path!r}")
    api = create_app(conveyor_app, settings)
    host.mount(path, api, name="conveyor")
    host_lifespan: Lifespan = host.router.lifespan_context

    @asynccontextmanager
    async def combined(app: Any) -> AsyncIterator[Any]:
        async with host_lifespan(app) as state, lifespan(api):
            yield state

    host.router.lifespan_context = combined
    return api
