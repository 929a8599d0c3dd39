"""The API on a Redis Cluster: key check + rate limit, enqueue, SSE, stats and workers all work
with every key of a call in one slot."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from conveyor.api import create_app
from conveyor.api.keys import KeyStore
from tests.api.conftest import api_settings
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse


async def test_api_on_cluster(cluster_servers: Any) -> None:
    url = cluster_servers.url
    queue = f"cluster-api-{uuid.uuid4().hex[:8]}"
    app = build_app(url, queue)
    asgi = create_app(app, api_settings(url, api_rate_limit=50))
    store = KeyStore(app.client)
    token, info = await store.create("cluster", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    worker = app.worker(queue, lease_ms=3000, idle_block_s=1.0)
    try:
        async with LifespanManager(asgi) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test", timeout=30) as http:
                r = await http.post(
                    f"/api/queues/{queue}/jobs",
                    json={"name": "stepper", "data": {"steps": 2}},
                    headers=headers,
                )
                assert r.status_code == 202, r.text
                await worker.start()
                events, _ = parse_sse((await http.get(r.json()["events_url"], headers=headers)).text)
                # The stream ends with the completed event, or (the job finished before the stream
                # opened) with the state snapshot showing it completed.
                last = events[-1]
                assert last.event == "completed" or (last.event == "state" and last.data["state"] == "completed")
                stats = (await http.get(f"/api/queues/{queue}", headers=headers)).json()
                assert stats["counts"]["completed"] == 1 and stats["throughput"]["completed"] == 1
                assert (await http.get("/api/workers", headers=headers)).status_code == 200
                assert (await http.get("/api/health")).json()["redis"] == "ok"
    finally:
        await worker.close(2.0)
        await store.revoke(info.id)
        await app.queue(queue).obliterate(force=True)
        await app.close()
