"""HEAD is served wherever GET is, over real HTTP: the GET's status and headers, no body; a 405 lists
HEAD beside GET. An event stream's or a long-poll's HEAD answers at once, opens no stream and takes
no slot of the key's cap (it reports the cap's 429 as its GET would). Before, the API's own GET
routes answered HEAD with 405 while static files and /openapi.json served it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor.api.slots import Slots
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import wait_for

_VARYING = {"date", "content-length"}  # content-length is compared where the body cannot change


class CountedSlots(Slots):
    """The API's own slot cap, counting every slot taken (a stream's slot is given back soon after
    its client leaves, so what is held at one moment cannot tell whether a HEAD took one)."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(kind, limit)
        self.taken = 0

    def take(self, key_id: str | None) -> None:
        super().take(key_id)
        self.taken += 1


@pytest.fixture
async def api(redis_url: str, qname: str) -> AsyncIterator[LiveApi]:
    app = build_app(redis_url, qname)
    settings = api_settings(redis_url, api_max_streams_per_key=1, api_max_waits_per_key=1)
    try:
        async with live_api(app, settings) as live:
            live.queue = qname  # type: ignore[attr-defined]
            yield live
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _delayed_job(api: LiveApi) -> str:
    queue = api.queue  # type: ignore[attr-defined]
    r = await api.http.post(f"/api/queues/{queue}/jobs", json={"name": "echo", "data": {"text": "x"},
                            "options": {"delay": 3600}}, headers=api.auth("enqueue"))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _same_answer(get: httpx.Response, head: httpx.Response) -> None:
    assert head.status_code == get.status_code, (head.status_code, get.status_code)
    assert head.content == b""
    shown = {k: v for k, v in head.headers.items() if k not in _VARYING}
    assert shown == {k: v for k, v in get.headers.items() if k not in _VARYING}


async def test_head_answers_as_get_on_every_kind_of_route(api: LiveApi) -> None:
    queue = api.queue  # type: ignore[attr-defined]
    job_id = await _delayed_job(api)
    paths = [
        "/api/health", "/api/queues", f"/api/queues/{queue}", f"/api/queues/{queue}/jobs?state=delayed",
        f"/api/jobs/{queue}/{job_id}", f"/api/jobs/{queue}/{job_id}/output", f"/api/jobs/{queue}/nope",
        "/api/workers", "/api/alerts", "/api/schedules", "/api/schedules/nope", "/openapi.json", "/docs",
        "/docs/init.js", "/api/queues/no-such-queue",
    ]
    for path in paths:
        get = await api.http.get(path, headers=api.auth())
        head = await api.http.head(path, headers=api.auth())
        _same_answer(get, head)
        if get.status_code == 200 and "application/json" in get.headers["content-type"]:
            assert head.headers["content-length"] == get.headers["content-length"], path
    # Authentication and scopes as on GET.
    assert (await api.http.head(f"/api/queues/{queue}")).status_code == 401
    assert (await api.http.head("/api/alerts", headers=api.auth("enqueue"))).status_code == 403


async def test_405_lists_head_wherever_get_is_served(api: LiveApi) -> None:
    queue = api.queue  # type: ignore[attr-defined]
    r = await api.http.delete("/api/health")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = await api.http.put(f"/api/queues/{queue}/jobs", headers=api.auth())
    assert r.status_code == 405 and set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}
    # A path without GET: HEAD is a 405 too, and the Allow header holds exactly what is served.
    for path in (f"/api/queues/{queue}/pause", f"/api/queues/{queue}/jobs:bulk"):
        r = await api.http.head(path, headers=api.auth())
        assert r.status_code == 405 and r.headers["Allow"] == "POST", (path, r.headers)
        assert r.content == b""
    r = await api.http.head(f"/api/queues/{queue}/failed", headers=api.auth())
    assert r.status_code == 405 and r.headers["Allow"] == "DELETE"
async def test_head_of_event_streams_opens_none_and_takes_no_slot(api: LiveApi) -> None:
    """The key may hold one stream: HEADs leave it free, and once a real stream holds it a HEAD gets
    the 429 its GET would."""
    queue = api.queue  # type: ignore[attr-defined]
    job_id = await _delayed_job(api)  # its stream never ends by itself
    state = api.asgi.state.conveyor_api
    for path in (f"/api/jobs/{queue}/{job_id}/events", f"/api/events?queue={queue}"):
        state.streams = slots = CountedSlots("event streams", 1)
        for _ in range(3):
            head = await api.http.head(path, headers=api.auth("reader"))
            assert head.status_code == 200, head.text
            assert head.headers["content-type"].startswith("text/event-stream") and head.content == b""
            assert "content-length" not in head.headers
            assert head.headers["cache-control"] == "no-cache"
        assert slots.taken == 0  # no stream was opened for a HEAD
        async with api.http.stream("GET", path, headers=api.auth("reader")) as stream:
            assert stream.status_code == 200  # the slot was free: no HEAD held it
            framing = {"date", "transfer-encoding"}  # the server's framing of a body a HEAD has not
            assert {k: v for k, v in stream.headers.items() if k not in framing} == {
                k: v for k, v in head.headers.items() if k not in framing}
            lines = stream.aiter_lines()
            await asyncio.wait_for(anext(lines), 30)  # the stream is open (its first frame came)
            busy = await api.http.head(path, headers=api.auth("reader"))
            assert busy.status_code == 429 and busy.headers["Retry-After"] and busy.content == b""
    missing = await api.http.head(f"/api/jobs/{queue}/nope/events", headers=api.auth("reader"))
    assert missing.status_code == 404 and missing.content == b""


async def test_head_of_a_long_poll_answers_now_and_takes_no_slot(api: LiveApi) -> None:
    queue = api.queue  # type: ignore[attr-defined]
    job_id = await _delayed_job(api)
    path = f"/api/jobs/{queue}/{job_id}/wait?timeout=300"
    state = api.asgi.state.conveyor_api
    state.waits = slots = CountedSlots("long-polls", 1)
    head = await api.http.head(path, headers=api.auth("reader"))  # a wait would outlast the client's 30 s
    now = await api.http.get(f"/api/jobs/{queue}/{job_id}/wait?timeout=0", headers=api.auth("reader"))
    _same_answer(now, head)
    assert head.headers["content-length"] == now.headers["content-length"]
    assert slots.taken == 1  # the GET's only
    waiting = asyncio.create_task(api.http.get(path, headers=api.auth("reader")))
    try:
        await wait_for(lambda: slots.taken == 2, timeout=30, what="the long-poll held")
        busy = await api.http.head(path, headers=api.auth("reader"))
        assert busy.status_code == 429 and busy.content == b""
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    assert (await api.http.head(f"/api/jobs/{queue}/nope/wait", headers=api.auth("reader"))).status_code == 404
