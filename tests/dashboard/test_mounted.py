"""The dashboard served from inside another app (conveyor.api.mount at /conveyor), in a real browser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.testing import RedisServer
from tests.dashboard.conftest import DashboardServer, Ui, _serve

expect = pytest.importorskip("playwright.sync_api").expect


@pytest.fixture(scope="module")
def dashboard_server() -> Iterator[DashboardServer]:
    """Overrides the suite's server: the same app, mounted at /conveyor inside a host app."""
    with RedisServer() as redis_server:
        yield from _serve(redis_server, Path(__file__).with_name("mount_server.py"), "/conveyor")


def test_dashboard_works_under_the_mount_path(ui: Ui) -> None:
    page = ui.page
    assert ui.server.dashboard_url.endswith("/conveyor/dashboard/")
    ui.sign_in("admin")
    row = page.locator("tr[data-queue='live']")
    expect(row).to_be_visible()
    with ui.server.http("enqueue") as c:
        r = c.post("/api/queues/live/jobs", json={"name": "echo", "data": {"n": 1}})
        assert r.status_code == 202, r.text
        assert r.headers["location"].startswith("/conveyor/api/jobs/live/")
    expect(row.locator("td[data-state='completed']")).to_have_text("1")
    assert ui.errors == [] and ui.csp_violations() == []
    requested = page.evaluate("() => performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    api_calls = [p for p in requested if "/api/" in p]
    assert api_calls and all(p.startswith("/conveyor/api/") for p in api_calls)
