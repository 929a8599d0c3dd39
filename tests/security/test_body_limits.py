"""Every route that takes a body refuses one over CONVEYOR_API_MAX_BODY_BYTES, also when the body is
streamed without a Content-Length (chunked): routes whose body FastAPI parses (alerts, schedules,
costs, budgets, dashboard bulk) read it whole before any key check, so the count must happen below
them, before any of it is buffered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app

LIMIT = 2048


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname, prefix=f"bl{uuid.uuid4().hex[:10]}")
    async with live_api(app, api_settings(redis_url, api_max_body_bytes=LIMIT)) as live:
        yield live
    await app.queue(qname).obliterate(force=True)
    await app.close()


def _chunks(total: int) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        yield b'{"rules": [], "padding": "'
        sent = 0
        while sent < total:
            yield b"x" * 1024
            sent += 1024
        yield b'"}'

    return gen()


@pytest.mark.parametrize("who", [None, "admin"])
async def test_a_streamed_body_over_the_limit_is_a_413_on_every_route(
    api: LiveApi, qname: str, who: str | None
) -> None:
    routes = [
        ("PUT", "/api/alerts"),
        ("PUT", "/api/schedules/nightly"),
        ("PATCH", "/api/costs/settings"),
        ("PUT", "/api/costs/prices/gpt"),
        ("PUT", "/api/budgets/tenant-a"),
        ("POST", f"/api/dashboard/queues/{qname}/bulk"),
        ("POST", f"/api/queues/{qname}/jobs"),
        ("POST", "/api/flows"),
    ]
    headers = {"Content-Type": "application/json", **(api.auth(who) if who else {})}
    for method, path in routes:
        r = await api.http.request(method, path, content=_chunks(64 * LIMIT), headers=headers)
        assert "content-length" not in r.request.headers
        # Without a key, a route that checks the key before reading answers 401 with the body unread.
        allowed = {413} if who else {401, 413}
        assert r.status_code in allowed, (method, path, r.status_code, r.text[:200])


async def test_a_streamed_body_within_the_limit_still_works(api: LiveApi) -> None:
    async def small() -> AsyncIterator[bytes]:
        yield b'{"rules": '
        yield b"[]}"

    r = await api.http.put("/api/alerts", content=small(), headers={**api.auth(), "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
