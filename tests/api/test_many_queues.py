"""A request over every queue in Redis reads a bounded number of queues at once.

`GET /api/queues?all=true` and the autoscaling routes read each queue with several calls; they ran
the calls of every queue at once, so one request over a few hundred queues opened a Redis connection
for each call in flight, up to the whole pool (500), which every other request then waited for.
Counted in the connections the API's Redis client holds afterwards, on a server of its own."""

from __future__ import annotations

import pytest

from conveyor.redis.keys import registry_key
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.conftest import server_info

QUEUES = 300


async def _clients(url: str) -> int:
    return int((await server_info(url, "clients"))["connected_clients"]) - 1  # not this one


@pytest.mark.parametrize("path", ["/api/queues?all=true", "/api/autoscaling", "/api/autoscaling/metrics"])
async def test_a_request_over_every_queue_holds_few_connections(qname: str, path: str) -> None:
    with RedisServer() as server:
        app = build_app(server.url, qname)
        try:
            await app.client.sadd(registry_key(app.prefix), *(f"{qname}-{i:03d}" for i in range(QUEUES)))
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                assert (await api.http.get("/api/health")).status_code == 200
                before = await _clients(server.url)
                r = await api.http.get(path, headers=api.auth("read"))
                assert r.status_code == 200, r.text
                opened = await _clients(server.url) - before
                if path.endswith("all=true"):
                    assert len(r.json()["queues"]) == QUEUES + 1
            # 8 queues at a time, each with a few calls of its own in flight: a few dozen connections.
            assert opened <= 100, opened
        finally:
            await app.close()
