"""A key revoked, or whose scopes narrow, while it holds an event stream or a long-poll open: the
stream ends and the long-poll answers 401/403 instead of serving data to a key that no longer has
the right to it. Real uvicorn, real Redis, streams read over TCP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from conveyor.api.keys import KeyStore
from tests.api.conftest import api_settings
from tests.api.live import LiveApi, live_api
from tests.api.sample_app import build_app
from tests.conftest import wait_for

DEADLINE_S = 60.0


async def _frames_until_end(response: httpx.Response, seen: list[bytes]) -> None:
    """Reads the stream into `seen` until the server ends it."""
    async for chunk in response.aiter_bytes():
        seen.append(chunk)


async def _ends(task: asyncio.Task[None]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
    if not done:
        task.cancel()
        return False
    task.result()
    return True


@asynccontextmanager
async def _live(redis_url: str, qname: str, **settings: Any) -> AsyncIterator[tuple[LiveApi, KeyStore]]:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url, **settings)) as api:
            yield api, KeyStore(app.client, app.prefix)
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()


async def _enqueue(api: LiveApi, queue: str) -> str:
    r = await api.http.post(f"/api/queues/{queue}/jobs", json={"name": "sleepy", "data": None}, headers=api.auth())
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _stream_is_open(api: LiveApi, key_id: str) -> None:
    state = api.asgi.state.conveyor_api
    await wait_for(lambda: state.streams.held(key_id) == 1, timeout=DEADLINE_S, what="the stream is held")


async def test_a_job_stream_ends_when_its_key_is_revoked(redis_url: str, qname: str) -> None:
    async with _live(redis_url, qname, api_key_cache_s=0.2) as (api, store):
        job_id = await _enqueue(api, qname)
        token, info = await store.create("streaming", ["read-data"])
        seen: list[bytes] = []
        async with api.http.stream(
            "GET", f"/api/jobs/{qname}/{job_id}/events", headers={"Authorization": f"Bearer {token}"},
            timeout=DEADLINE_S,
        ) as response:
            assert response.status_code == 200
            reading = asyncio.create_task(_frames_until_end(response, seen))
            await _stream_is_open(api, info.id)
            assert await store.revoke(info.id)
            assert await _ends(reading), "the stream went on serving a revoked key"
        assert b"event: state" in b"".join(seen)
        state = api.asgi.state.conveyor_api
        await wait_for(lambda: state.streams.held(info.id) == 0, timeout=DEADLINE_S, what="the slot is given back")


async def test_a_job_stream_showing_data_ends_when_its_key_loses_read_data(redis_url: str, qname: str) -> None:
    async with _live(redis_url, qname, api_key_cache_s=0.2) as (api, store):
        job_id = await _enqueue(api, qname)
        token, info = await store.create("narrowed", ["read-data"])
        headers = {"Authorization": f"Bearer {token}"}
        seen: list[bytes] = []
        async with api.http.stream(
            "GET", f"/api/jobs/{qname}/{job_id}/events", headers=headers, timeout=DEADLINE_S
        ) as response:
            assert response.status_code == 200
            reading = asyncio.create_task(_frames_until_end(response, seen))
            await _stream_is_open(api, info.id)
            await api.app.client.hset(store.record_key(info.id), "scopes", "read")
            assert await _ends(reading), "the stream went on showing payloads to a key without read-data"
        # The client reconnects and gets a stream without payloads.
        async with api.http.stream(
            "GET", f"/api/jobs/{qname}/{job_id}/events", headers=headers, timeout=DEADLINE_S
        ) as again:
            assert again.status_code == 200
            first = b""
            async for chunk in again.aiter_bytes():
                first += chunk
                if b"event: state" in first and first.endswith(b"\n\n"):
                    break
            assert b'"data_hidden":true' in first
        await store.revoke(info.id)


async def test_the_live_events_stream_ends_when_its_key_is_revoked(redis_url: str, qname: str) -> None:
    async with _live(redis_url, qname, api_key_cache_s=0.2) as (api, store):
        await _enqueue(api, qname)  # the queue exists
        token, info = await store.create("watching", ["read"])
        seen: list[bytes] = []
        async with api.http.stream(
            "GET", f"/api/events?queue={qname}", headers={"Authorization": f"Bearer {token}"}, timeout=DEADLINE_S
        ) as response:
            assert response.status_code == 200
            reading = asyncio.create_task(_frames_until_end(response, seen))
            await _stream_is_open(api, info.id)
            assert await store.revoke(info.id)
            assert await _ends(reading), "the events stream went on serving a revoked key"


async def test_a_long_poll_of_a_key_revoked_meanwhile_answers_401(redis_url: str, qname: str) -> None:
    async with _live(redis_url, qname, api_key_cache_s=0.2, api_sse_keepalive_s=0.2) as (api, store):
        r = await api.http.post(
            f"/api/queues/{qname}/jobs", json={"name": "echo", "data": {"text": "secret"}}, headers=api.auth()
        )
        job_id = r.json()["id"]
        token, info = await store.create("waiting", ["read-data"])
        state = api.asgi.state.conveyor_api
        wait = asyncio.create_task(
            api.http.get(f"/api/jobs/{qname}/{job_id}/wait?timeout=120",
                         headers={"Authorization": f"Bearer {token}"}, timeout=DEADLINE_S * 3)
        )
        await wait_for(lambda: state.waits.held(info.id) == 1, timeout=DEADLINE_S, what="the wait is held")
        revoked_at = time.monotonic()
        assert await store.revoke(info.id)
        # Past the cache time the key is refused everywhere; then the job ends and the wait answers.
        await wait_for(lambda: time.monotonic() > revoked_at + 0.3, timeout=DEADLINE_S, what="cache time")
        worker = api.app.worker(qname, idle_block_s=0.5)
        await worker.start()
        try:
            response = await asyncio.wait_for(wait, DEADLINE_S * 3)
        finally:
            await worker.close(5.0)
        assert response.status_code == 401, response.text
        assert "secret" not in response.text
