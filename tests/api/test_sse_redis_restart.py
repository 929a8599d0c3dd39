"""An open event stream while Redis restarts: it stays open (keep-alives go on), then carries on
with the job's events once Redis is back; before, the first keep-alive's re-check of the job raised,
the stream broke off mid-body and the API logged the fault as an unhandled error. Real uvicorn and a
real Redis (with an append-only file, so the job survives the kill)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse

DEADLINE_S = 60.0
KEEPALIVES_WHILE_DOWN = 3


async def test_a_job_stream_survives_a_redis_restart(qname: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="conveyor.api")
    with RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        app = build_app(server.url, qname)
        try:
            async with live_api(app, api_settings(server.url, api_sse_keepalive_s=0.2)) as api:
                r = await api.http.post(f"/api/queues/{qname}/jobs",
                                        json={"name": "echo", "data": {"text": "x"}, "options": {"delay": 3600}},
                                        headers=api.auth())
                job_id = r.json()["id"]
                body = b""
                down_keepalives = 0

                async def follow(response: httpx.Response) -> None:
                    nonlocal body, down_keepalives
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if server.proc is not None and server.proc.poll() is None:
                            if b"keep-alive" in body and down_keepalives == 0 and b"event: state" in body:
                                server.stop()
                                body += b": stopped\n\n"
                        elif chunk.count(b"keep-alive"):
                            down_keepalives += chunk.count(b"keep-alive")

                async with api.http.stream("GET", f"/api/jobs/{qname}/{job_id}/events", headers=api.auth(),
                                           timeout=DEADLINE_S) as response:
                    assert response.status_code == 200
                    reading = asyncio.create_task(follow(response))
                    deadline = asyncio.get_running_loop().time() + DEADLINE_S
                    while down_keepalives < KEEPALIVES_WHILE_DOWN:
                        assert not reading.done(), f"the stream ended while Redis was down: {body[-300:]!r}"
                        assert asyncio.get_running_loop().time() < deadline, "no keep-alives while Redis was down"
                        await asyncio.sleep(0.05)
                    server.start(server.port)
                    # Once the API can write again, the cancellation reaches the open stream.
                    while True:
                        cancel = await api.http.delete(f"/api/jobs/{qname}/{job_id}", headers=api.auth())
                        if cancel.status_code == 200:
                            break
                        assert cancel.status_code == 503, cancel.text
                        assert asyncio.get_running_loop().time() < deadline, "Redis did not come back"
                        await asyncio.sleep(0.1)
                    await asyncio.wait_for(reading, DEADLINE_S)
                events, _ = parse_sse(body.decode())
                assert [e.event for e in events] == ["state", "cancelled"], body[-500:]
        finally:
            await app.close()
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
