"""The API under many held connections: hundreds of SSE streams and long-polls open against a real
`conveyor api` process while /api/health stays 200 and enqueue still answers; waits that stop when
their client leaves; per-key caps with 429 and Retry-After; a Last-Event-ID past Redis's range.

Counts are bounded (a few hundred) so the test runs in `make test`; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest

from conveyor.api.keys import KeyStore
from conveyor.testing import free_port
from tests.api.api_process import api_env, conveyor_api
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.conftest import wait_for

STREAMS = 300
WAITS = 200


class RawConn:
    """One HTTP/1.1 request on its own socket, read as raw bytes (hundreds are cheap)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def get(cls, port: int, path: str, token: str, extra: str = "") -> RawConn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {token}\r\n{extra}\r\n".encode()
        )
        await writer.drain()
        return cls(reader, writer)

    async def head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 60)
        lines = raw.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    async def read_until(self, marker: bytes) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(marker), 60)

    async def json_body(self, headers: dict[str, str]) -> object:
        if "content-length" in headers:
            return orjson.loads(await self.reader.readexactly(int(headers["content-length"])))
        return None

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
def api_port(redis_url: str, qname: str) -> Iterator[int]:
    port = free_port()
    env = api_env(redis_url, qname, CONVEYOR_API_SSE_KEEPALIVE_S="5",
                  CONVEYOR_API_MAX_STREAMS_PER_KEY=str(STREAMS), CONVEYOR_API_MAX_WAITS_PER_KEY=str(WAITS))
    with conveyor_api(port, env):
        yield port


async def test_hundreds_of_streams_and_waits_leave_the_api_responsive(
    api_port: int, redis_url: str, qname: str
) -> None:
    app = build_app(redis_url, qname)
    store = KeyStore(app.client)
    token, info = await store.create("holder", ["enqueue", "read-data"])
    auth = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{api_port}"
    conns: list[RawConn] = []
    worker = app.worker(qname, lease_ms=3000, idle_block_s=1.0)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            await wait_for(_answers(http), timeout=60, what="the API answers")
            r = await http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "x"}},
                                headers=auth)
            assert r.status_code == 202, r.text
            job = r.json()["id"]
            streams = [await RawConn.get(api_port, f"/api/jobs/{qname}/{job}/events", token)
                       for _ in range(STREAMS)]
            conns += streams
            for conn in streams:
                status, _ = await conn.head()
                assert status == 200
                await conn.read_until(b"event: state")
            waits = [await RawConn.get(api_port, f"/api/jobs/{qname}/{job}/wait?timeout=120", token)
                     for _ in range(WAITS)]
            conns += waits
            # With all of them held: health is fine and enqueue still answers.
            for _ in range(10):
                # A fresh connection each time: the pooled one may have outlived the keep-alive limit.
                http = httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_keepalive_connections=0))
                health = await http.get("/api/health")
                assert health.status_code == 200 and health.json()["redis"] == "ok", health.text
                r = await http.post(f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "y"}},
                                    headers=auth)
                assert r.status_code == 202, r.text
            # One more stream or wait is over this key's cap.
            extra = await RawConn.get(api_port, f"/api/jobs/{qname}/{job}/events", token)
            conns.append(extra)
            status, headers = await extra.head()
            assert status == 429 and headers["retry-after"].isdigit()
            await worker.start()  # every held stream and wait now gets the end
            for conn in streams:
                await conn.read_until(b"event: completed")
            for conn in waits:
                status, headers = await conn.head()
                body = await conn.json_body(headers)
                assert status == 200 and isinstance(body, dict) and body["state"] == "completed", body
    finally:
        for conn in conns:
            conn.close()
        await worker.close(2.0)
        await store.revoke(info.id)
        await app.queue(qname).obliterate(force=True)
        await app.close()


def _answers(http: httpx.AsyncClient) -> object:
    async def check() -> bool:
        try:
            return (await http.get("/api/health")).status_code == 200
        except httpx.TransportError:
            return False

    return check


async def test_waits_and_streams_stop_when_their_client_leaves(redis_url: str, qname: str) -> None:
    from tests.api.conftest import api_settings

    app = build_app(redis_url, qname)
    settings = api_settings(redis_url, api_max_waits_per_key=40, api_max_streams_per_key=30)
    try:
        async with live_api(app, settings) as api:
            port = int(api.url.rsplit(":", 1)[1])
            state = api.asgi.state.conveyor_api
            token = api.tokens["reader"]
            key_id = token.split("_")[1]
            job = await _enqueue(api.http, qname, api.auth("enqueue"))
            waits = [await RawConn.get(port, f"/api/jobs/{qname}/{job}/wait?timeout=300", token)
                     for _ in range(40)]
            streams = [await RawConn.get(port, f"/api/jobs/{qname}/{job}/events", token) for _ in range(30)]
            for conn in streams:
                assert (await conn.head())[0] == 200
            await wait_for(lambda: state.waits.held(key_id) == 40, what="40 waits held")
            assert state.streams.held(key_id) == 30
            assert state.hub.followed() == {qname: 70}
            # Past the caps: 429 with Retry-After, for waits and streams alike.
            r = await api.http.get(f"/api/jobs/{qname}/{job}/wait?timeout=1", headers=api.auth("reader"))
            assert r.status_code == 429 and r.headers["Retry-After"].isdigit(), r.text
            r = await api.http.get(f"/api/jobs/{qname}/{job}/events", headers=api.auth("reader"))
            assert r.status_code == 429 and r.headers["Retry-After"].isdigit(), r.text
            # Another key is not affected by this one's caps.
            r = await api.http.get(f"/api/jobs/{qname}/{job}/wait?timeout=0", headers=api.auth("admin"))
            assert r.status_code == 200 and r.json()["state"] == "waiting"
            for conn in waits + streams:
                conn.close()
            # The server notices each departure: nothing is held or followed for them any more.
            await wait_for(lambda: state.waits.held(key_id) == 0, what="waits released")
            await wait_for(lambda: state.streams.held(key_id) == 0, what="streams released")
            await wait_for(lambda: state.hub.followed() == {}, what="hub unsubscribed")
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _enqueue(http: httpx.AsyncClient, queue: str, auth: dict[str, str]) -> str:
    r = await http.post(f"/api/queues/{queue}/jobs", json={"name": "echo", "data": {"text": "x"}}, headers=auth)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def test_last_event_id_past_the_range_is_a_422_and_a_big_one_in_range_streams(
    redis_url: str, qname: str
) -> None:
    from tests.api.conftest import api_settings

    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            job = await _enqueue(api.http, qname, api.auth("enqueue"))
            url = f"/api/jobs/{qname}/{job}/events"
            r = await api.http.get(url, headers={**api.auth("reader"), "Last-Event-ID": "99999999999999999999-0"})
            # The documented pattern states each part's bound, so the id is refused as it describes.
            assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", r.text
            assert r.json()["error"]["details"][0]["loc"] == ["header", "Last-Event-ID"]
            # The largest id in range: a correct stream (keep-alives; no event is after it).
            async with api.http.stream(
                "GET", url, headers={**api.auth("reader"), "Last-Event-ID": f"{2**64 - 1}-0"}
            ) as stream:
                assert stream.status_code == 200
                seen = b""
                async for chunk in stream.aiter_bytes():
                    seen += chunk
                    if seen.count(b": keep-alive") >= 2:
                        break
                assert b"event:" not in seen
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
