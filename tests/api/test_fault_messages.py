"""A 503 says why Redis cannot serve when Redis says so: out of memory (maxmemory with noeviction)
or read-only (a replica) are not "unreachable", and an operator reading the answer should not go
looking for a network fault. Real uvicorn, a real Redis pushed into each state."""

from __future__ import annotations

from conveyor.redis.connection import connect
from conveyor.testing import RedisServer, free_port
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app


async def test_a_503_names_out_of_memory_and_read_only(qname: str) -> None:
    with RedisServer() as server:
        app = build_app(server.url, qname)
        admin = connect(server.url)
        try:
            async with live_api(app, api_settings(server.url, api_key_cache_s=60)) as api:
                enqueue = (f"/api/queues/{qname}/jobs", {"name": "echo", "data": {"text": "x"}})
                assert (await api.http.post(enqueue[0], json=enqueue[1], headers=api.auth())).status_code == 202

                await admin.config_set("maxmemory", "1")
                r = await api.http.post(enqueue[0], json=enqueue[1], headers=api.auth())
                assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
                assert "out of memory" in r.json()["error"]["message"], r.text
                await admin.config_set("maxmemory", "0")

                await admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # a primary never there
                r = await api.http.post(enqueue[0], json=enqueue[1], headers=api.auth())
                assert r.status_code == 503 and "read-only" in r.json()["error"]["message"], r.text
                await admin.execute_command("REPLICAOF", "NO", "ONE")

                r = await api.http.post(enqueue[0], json=enqueue[1], headers=api.auth())
                assert r.status_code == 202, r.text

                server.stop()
                r = await api.http.post(enqueue[0], json=enqueue[1], headers=api.auth())
                assert r.status_code == 503 and r.json()["error"]["message"] == "Redis is unreachable", r.text
                server.start(server.port)  # for the keys' clean-up
        finally:
            await admin.aclose()
            await app.close()
