"""A key with the `read` scope sees no payload on any route that shows a job: not its data, result,
log lines or streamed output, whichever route, stream or dashboard view it reads (docs/api.md,
"Keys and scopes"). A `read-data` key sees them, so the check is not vacuous."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from conveyor import JobContext
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import running, wait_for

SECRET = "s3cr3t-" + uuid.uuid4().hex


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname, prefix=f"rs{uuid.uuid4().hex[:10]}")

    @app.task(queue=qname)
    async def talker(ctx: JobContext, payload: object) -> object:
        await ctx.log(f"log line {SECRET}")
        await ctx.stream(f"output {SECRET}")
        return {"echo": payload}

    worker = app.worker(qname, lease_ms=3000, idle_block_s=0.2)
    async with live_api(app, api_settings(redis_url)) as live, running(worker):
        yield live
    await app.queue(qname).obliterate(force=True)
    await app.close()


async def test_no_read_route_shows_payloads_to_a_read_key(api: LiveApi, qname: str) -> None:
    r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "talker", "data": {"s": SECRET}},
                            headers=api.auth("enqueue"))
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def done() -> bool:
        got = await api.http.get(f"/api/jobs/{qname}/{job_id}", headers=api.auth("read"))
        return bool(got.json()["state"] == "completed")

    await wait_for(done, timeout=30, what="the job completed")
    routes = [
        f"/api/jobs/{qname}/{job_id}",
        f"/api/jobs/{qname}/{job_id}/wait?timeout=0",
        f"/api/jobs/{qname}/{job_id}/output",
        f"/api/jobs/{qname}/{job_id}/events",
        f"/api/queues/{qname}/jobs?state=completed",
        f"/api/dashboard/find?id={job_id}",
        f"/api/dashboard/queues/{qname}/jobs?state=completed",
        f"/api/dashboard/jobs/{qname}/{job_id}/details",
    ]
    for path in routes:
        shown = await api.http.get(path, headers=api.auth("reader"))
        assert shown.status_code == 200, (path, shown.text[:200])
        hidden = await api.http.get(path, headers=api.auth("read"))
        assert hidden.status_code == 200, (path, hidden.text[:200])
        assert SECRET not in hidden.text, (path, hidden.text[:2000])
    details = await api.http.get(f"/api/dashboard/jobs/{qname}/{job_id}/details", headers=api.auth("reader"))
    assert SECRET in details.text  # read-data sees the log and the output
