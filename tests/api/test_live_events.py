"""GET /api/events: the events of several queues on one live stream over real HTTP, the key's stream
cap, payloads withheld without read-data, and the stream released when its client leaves."""

from __future__ import annotations

import json
from typing import Any

import httpx

from conveyor import Queue
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.test_hold import build_app
from tests.conftest import wait_for


class _Reader:
    """Events of a live text/event-stream response, one at a time (comments skipped)."""

    def __init__(self, stream: httpx.Response) -> None:
        self.stream = stream
        self._chunks = stream.aiter_text()
        self._buf = ""

    async def next(self) -> tuple[str, dict[str, Any]]:
        while True:
            while "\n\n" in self._buf:
                block, self._buf = self._buf.split("\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
                if "data" in fields:
                    return fields["event"], json.loads(fields["data"])
            try:
                self._buf += await self._chunks.__anext__()
            except StopAsyncIteration:
                raise AssertionError("the stream ended") from None

    async def take(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        return [await self.next() for _ in range(n)]


async def _ready(api: LiveApi, qname: str, other: str, who: str) -> _Reader:
    stream = await api.http.send(
        api.http.build_request("GET", "/api/events", params=[("queue", qname), ("queue", other)],
                               headers=api.auth(who)),
        stream=True,
    )
    assert stream.status_code == 200, await stream.aread()
    reader = _Reader(stream)
    kind, data = await reader.next()
    assert kind == "ready" and data == {"queues": sorted([qname, other])}
    return reader


async def test_one_stream_carries_the_events_of_several_queues(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    other = f"{qname}-other"
    await Queue(other, redis=app.client).add("x", {"secret": 1})  # exists in Redis, not declared
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            reader = await _ready(api, qname, other, "reader")
            try:
                first = await Queue(qname, redis=app.client).add("echo", {"text": "a"})
                second = await Queue(other, redis=app.client).add("x", {"secret": 2})
                events = await reader.take(2)
            finally:
                await reader.stream.aclose()
            assert [(e, d["queue"], d["job_id"]) for e, d in events] == [
                ("added", qname, first.id), ("added", other, second.id)]
            # A read key (no read-data) gets the same events without payloads.
            reader = await _ready(api, qname, other, "read")
            try:
                await Queue(other, redis=app.client).add("x", {"secret": 3})
                kind, data = await reader.next()
            finally:
                await reader.stream.aclose()
            assert kind == "added" and "secret" not in json.dumps(data)
            state = api.asgi.state.conveyor_api
            await wait_for(lambda: state.hub.followed() == {}, what="the left streams unsubscribed")
    finally:
        await app.queue(qname).obliterate(force=True)
        await Queue(other, redis=app.client).obliterate(force=True)
        await app.close()


async def test_unknown_queue_is_a_404_and_the_stream_cap_holds(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url, api_max_streams_per_key=1)) as api:
            r = await api.http.get("/api/events", params={"queue": f"{qname}-missing"}, headers=api.auth("read"))
            assert r.status_code == 404, r.text
            r = await api.http.get("/api/events", params={"queue": "bad name!"}, headers=api.auth("read"))
            assert r.status_code in (404, 422), r.text
            r = await api.http.get("/api/events", params=[("queue", f"q{i}") for i in range(51)],
                                   headers=api.auth("read"))
            assert r.status_code == 422, r.text
            async with api.http.stream("GET", "/api/events", params={"queue": qname},
                                       headers=api.auth("read")) as held:
                assert held.status_code == 200
                r = await api.http.get("/api/events", params={"queue": qname}, headers=api.auth("read"))
                assert r.status_code == 429 and r.headers["Retry-After"].isdigit(), r.text
            r = await api.http.get("/api/events", params={"queue": qname}, headers={})
            assert r.status_code == 401
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
