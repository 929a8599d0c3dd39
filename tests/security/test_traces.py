"""Stack traces (server paths, code) are shown to admin keys only, on every route of the real API and
the dashboard that shows a job's error; read and read-data keys get the type and message."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import running


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname, prefix=f"tr{uuid.uuid4().hex[:10]}")
    async with live_api(app, api_settings(redis_url)) as live:
        yield live
    await app.queue(qname).obliterate(force=True)
    await app.close()


async def test_only_admin_keys_see_stack_traces(api: LiveApi, qname: str) -> None:
    job = await api.app.queue(qname).add("boom")
    async with running(api.app.worker(qname, lease_ms=5000)):
        await job.wait(20)
    views = {
        "job": (f"/api/jobs/{qname}/{job.id}", lambda body: body["error"]),
        "wait": (f"/api/jobs/{qname}/{job.id}/wait?timeout=0", lambda body: body["error"]),
        "list": (f"/api/queues/{qname}/jobs?state=failed", lambda body: body["jobs"][0]["error"]),
        "dashboard": (f"/api/dashboard/queues/{qname}/jobs?state=failed", lambda body: body["jobs"][0]["error"]),
    }
    for view, (path, error_of) in views.items():
        for who in ("read", "reader", "admin"):
            r = await api.http.get(path, headers=api.auth(who))
            assert r.status_code == 200, (view, who, r.text)
            error = error_of(r.json())
            assert error["type"] == "ValueError" and error["message"] == "boom goes the handler", (view, who)
            if who == "admin":
                assert "Traceback" in error["stack"] and "sample_app.py" in error["stack"], view
            else:
                assert "stack" not in error and "sample_app.py" not in r.text, (view, who)
    details = await api.http.get(f"/api/dashboard/jobs/{qname}/{job.id}/details", headers=api.auth("read"))
    assert details.status_code == 200 and "boom goes the handler" in details.text
    assert "Traceback" not in details.text and "sample_app.py" not in details.text
