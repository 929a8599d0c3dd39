"""GET /api/workers (worker registry records) and GET /api/health (open; 503 when Redis is down)."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
from asgi_lifespan import LifespanManager

from conveyor.api import create_app
from conveyor.redis.keys import WorkerRegistryKeys
from conveyor.testing import RedisServer
from tests.api.conftest import Api, api_settings
from tests.api.sample_app import build_app


async def test_workers_lists_live_registry_records(api: Api) -> None:
    keys = WorkerRegistryKeys("cv")
    client = api.app.client
    now = int(time.time() * 1000)
    live, gone = f"host-a:1:{uuid.uuid4().hex[:6]}", f"host-b:2:{uuid.uuid4().hex[:6]}"
    record = {
        "id": live,
        "host": "host-a",
        "pid": 1,
        "queues": [api.queue],
        "concurrency": 4,
        "version": "0.1.0",
        "started_ms": now - 5000,
        "last_beat_ms": now,
        "counts": {"processed": 7},
    }
    await client.zadd(keys.index, {live: now, gone: now - 1000})
    await client.set(keys.worker(live), orjson.dumps(record), px=30_000)  # `gone` has no record: expired
    try:
        r = await api.http.get("/api/workers", headers=api.auth("read"))
        assert r.status_code == 200
        mine = [w for w in r.json()["workers"] if w["id"] in (live, gone)]
        assert mine == [record]
        assert (await api.http.get("/api/workers")).status_code == 401
    finally:
        await client.zrem(keys.index, live, gone)
        await client.delete(keys.worker(live))


async def test_health_is_open_and_ok(api: Api) -> None:
    r = await api.http.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["redis"] == "ok"


async def test_health_is_503_and_calls_are_503_when_redis_is_down() -> None:
    with RedisServer() as server:
        app = build_app(server.url, f"down-{uuid.uuid4().hex[:6]}")
        asgi = create_app(app, api_settings(server.url, api_auth=False))
        async with LifespanManager(asgi) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as http:
                assert (await http.get("/api/health")).status_code == 200
                server.stop()
                r = await http.get("/api/health")
                assert r.status_code == 503 and r.json()["redis"] == "unreachable"
                r = await http.get("/api/queues")
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
                assert "Traceback" not in r.text and "127.0.0.1" not in r.text
                server.start(server.port)
                assert (await http.get("/api/health")).status_code == 200
        await app.close()
