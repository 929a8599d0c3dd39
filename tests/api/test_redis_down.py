"""With Redis down, the API answers every route with a clear 503 instead of holding the request: a
long-poll included, which before waited out the event reader's start-up deadline (10 s, whatever the
poll's own timeout) before answering. Real uvicorn, a real Redis that is stopped."""

from __future__ import annotations

import httpx

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app

NEVER_S = 3600.0  # the reader's start-up deadline, raised so that only a prompt answer passes


async def test_every_kind_of_route_answers_503_while_redis_is_down(qname: str) -> None:
    with RedisServer() as server:
        app = build_app(server.url, qname)
        try:
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                r = await api.http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                        headers=api.auth())
                job = r.json()["id"]
                assert (await api.http.get(f"/api/queues/{qname}", headers=api.auth())).status_code == 200
                api.asgi.state.conveyor_api.hub.ready_timeout_s = NEVER_S
                server.stop()
                async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
                    for method, path in [
                        ("GET", f"/api/jobs/{qname}/{job}/wait?timeout=1"),
                        ("GET", f"/api/jobs/{qname}/{job}/wait?timeout=120"),
                        ("GET", f"/api/jobs/{qname}/{job}/events"),
                        ("GET", f"/api/events?queue={qname}"),
                        ("GET", f"/api/jobs/{qname}/{job}"),
                        ("POST", f"/api/queues/{qname}/jobs"),
                        ("GET", "/api/queues"),
                        ("GET", "/api/dashboard/stats"),
                    ]:
                        body = {"name": "echo", "data": {"text": "y"}} if method == "POST" else None
                        r = await http.request(method, path, json=body, headers=api.auth())
                        assert r.status_code == 503, (path, r.text)
                        assert r.json()["error"]["code"] == "unavailable"
                    health = await http.get("/api/health")
                    assert health.status_code == 503 and health.json()["redis"] == "unreachable"
                server.start(server.port)
        finally:
            await app.close()
