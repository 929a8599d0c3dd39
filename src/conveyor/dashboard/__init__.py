"""The web dashboard: static files served at /dashboard plus a few read endpoints for it.

`mount(app)` is called by the API's `create_app`; the UI is plain HTML, CSS and ES modules shipped
inside the package, so there is nothing to build or install separately.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from conveyor.dashboard.static_files import CONTENT_SECURITY_POLICY, STATIC_DIR, DashboardFiles

if TYPE_CHECKING:
    from fastapi import FastAPI

DEFAULT_PATH = "/dashboard"

__all__ = ["CONTENT_SECURITY_POLICY", "DEFAULT_PATH", "STATIC_DIR", "mount"]


def mount(app: FastAPI, path: str = DEFAULT_PATH) -> None:
    """Serve the dashboard at `path` and add its endpoints under /api/dashboard."""
    # Imported here: the routes use conveyor.api, whose create_app imports this package.
    from conveyor.dashboard.routes import router

    app.include_router(router)
    app.mount(path, DashboardFiles(), name="dashboard")
