"""Conveyor's API and dashboard mounted inside the user's own FastAPI app, sharing its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from conveyor.api.keys import KeyStore
from conveyor.api.mount import mount
from conveyor.errors import ConfigurationError
from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse


def host_app(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        events.append("host started")
        yield {"greeting": "hello"}
        events.append("host stopped")

    app = FastAPI(lifespan=lifespan)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def test_mounted_api_serves_under_the_path_and_runs_inside_the_host_lifespan(
    qname: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A server whose eviction policy the API's own start-up warns about: proof that it ran.
    with RedisServer(extra_args=["--maxmemory-policy", "allkeys-lru"]) as server:
        events: list[str] = []
        host = host_app(events)
        jobs = build_app(server.url, qname)
        api = mount(host, jobs, path="/conveyor", settings=api_settings(server.url))
        token, _ = await KeyStore(jobs.client).create("mount-test", ["admin"])
        auth = {"Authorization": f"Bearer {token}"}
        caplog.set_level(logging.WARNING)
        async with LifespanManager(host) as manager:
            assert events == ["host started"]
            assert any("maxmemory-policy" in r.getMessage() for r in caplog.records)
            worker = jobs.worker(qname, lease_ms=3000, idle_block_s=1.0)
            await worker.start()
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://host.test", timeout=30) as http:
                assert (await http.get("/hello")).json() == {"hello": "world"}  # the host's own routes
                r = await http.post(f"/conveyor/api/queues/{qname}/jobs", headers=auth,
                                    json={"name": "echo", "data": {"text": "hi", "n": 2}})
                assert r.status_code == 202, r.text
                location = r.headers["location"]
                assert location.startswith(f"/conveyor/api/jobs/{qname}/")
                done = await http.get(location + "/wait", params={"timeout": 20}, headers=auth)
                assert done.json()["state"] == "completed"
                assert done.json()["result"] == {"text": "hihi"}
                stream = await http.get(location + "/events", headers=auth)
                sse_events, _ = parse_sse(stream.text)
                assert [(e.event, e.data["state"]) for e in sse_events] == [("state", "completed")]
                # Errors keep the API's own shape; the host's 404s stay the host's.
                missing = await http.get(f"/conveyor/api/jobs/{qname}/nope", headers=auth)
                assert missing.status_code == 404 and "error" in missing.json()
                assert (await http.get(f"/conveyor/api/queues/{qname}")).status_code == 401
                assert (await http.get("/nothing-here")).json() == {"detail": "Not Found"}
                # The dashboard and the API docs are mounted too.
                page = await http.get("/conveyor/dashboard/")
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]
                assert (await http.get("/conveyor/openapi.json")).json()["info"]["title"].startswith("Conveyor API")
            await worker.close()
            await jobs.queue(qname).obliterate(force=True)
        assert events == ["host started", "host stopped"]
        assert api.state.conveyor_api.conveyor is jobs
        await jobs.close()


def test_mount_path_is_checked() -> None:
    jobs = build_app("redis://127.0.0.1:1/0", "q")
    for bad in ("conveyor", "/conveyor/", "/"):
        with pytest.raises(ConfigurationError):
            mount(FastAPI(), jobs, path=bad)
