"""A Redis fault inside an open event stream, on a read other than the keep-alive's (here the
catch-up of a job's streamed output, whose reply the TCP proxy loses): the stream ends cleanly, a
warning is logged, and the client resumes with Last-Event-ID. Before, the stream broke off mid-body
(an incomplete chunked response) and the API logged the fault as an unhandled error with its trace.
Real uvicorn, a real Redis behind the fault proxy."""

from __future__ import annotations

import logging

import pytest

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.api.sse_parse import parse_sse
from tests.proxy import TcpProxy


async def test_a_fault_inside_a_stream_ends_it_cleanly(
    redis_server: RedisServer, qname: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="conveyor.api")
    with TcpProxy(redis_server.port) as proxy:
        app = build_app(proxy.url, qname)
        try:
            async with live_api(app, api_settings(proxy.url)) as api:
                r = await api.http.post(f"/api/queues/{qname}/jobs",
                                        json={"name": "echo", "data": {"text": "x"}, "options": {"delay": 3600}},
                                        headers=api.auth())
                job_id = r.json()["id"]
                proxy.lose_reply(b"GETRANGE")  # the first output catch-up, right after the state frame
                async with api.http.stream("GET", f"/api/jobs/{qname}/{job_id}/events", headers=api.auth(),
                                           timeout=60) as response:
                    assert response.status_code == 200
                    body = b"".join([chunk async for chunk in response.aiter_bytes()])  # ends, unbroken
                assert proxy.cuts == 1
                events, _ = parse_sse(body.decode())
                assert [e.event for e in events] == ["state"], body
                # Nothing happened to the job, and the API serves it (a client resumes the stream).
                resumed = await api.http.get(f"/api/jobs/{qname}/{job_id}", headers=api.auth())
                assert resumed.status_code == 200 and resumed.json()["state"] == "delayed"
        finally:
            await app.close()
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()]
    assert any("Last-Event-ID" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
