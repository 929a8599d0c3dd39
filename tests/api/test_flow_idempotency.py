"""POST /api/flows with an Idempotency-Key: a client that repeats the call (its reply was lost on the
way back from Redis, or from the API) gets the same flow, not a second one. Real Redis behind the TCP
proxy of tests/proxy.py, real uvicorn."""

from __future__ import annotations

import uuid
from typing import Any

from conveyor.testing import RedisServer
from tests.api.conftest import api_settings
from tests.api.live import live_api
from tests.api.sample_app import build_app
from tests.proxy import TcpProxy


def _tree(queue: str, marker: str) -> dict[str, Any]:
    return {
        "queue": queue, "name": "echo", "data": {"text": "root"},
        "children": [{"queue": queue, "name": "echo", "data": {"text": marker}}],
    }


async def _jobs(api: Any, queue: str) -> int:
    r = await api.http.get(f"/api/queues/{queue}", headers=api.auth())
    assert r.status_code == 200, r.text
    return sum(int(n) for n in r.json()["counts"].values())


async def test_a_flow_repeated_after_its_reply_was_lost_is_written_once(redis_server: RedisServer, qname: str) -> None:
    with TcpProxy(redis_server.port) as proxy:
        app = build_app(proxy.url, qname)
        try:
            async with live_api(app, api_settings(proxy.url)) as api:
                marker = f"lost-reply-{uuid.uuid4().hex}"
                headers = {**api.auth("client"), "Idempotency-Key": f"flow-{uuid.uuid4().hex}"}
                proxy.lose_reply(marker.encode())
                first = await api.http.post("/api/flows", json=_tree(qname, marker), headers=headers)
                assert proxy.cuts == 1 and first.status_code == 503, first.text
                again = await api.http.post("/api/flows", json=_tree(qname, marker), headers=headers)
                assert again.status_code == 202, again.text
                once_more = await api.http.post("/api/flows", json=_tree(qname, marker), headers=headers)
                assert once_more.status_code == 202 and once_more.json()["id"] == again.json()["id"]
                assert await _jobs(api, qname) == 2  # the root and its child, once
                other = await api.http.post(
                    "/api/flows", json=_tree(qname, "another"), headers={**headers, "Idempotency-Key": "other-key"}
                )
                assert other.status_code == 202 and other.json()["id"] != again.json()["id"]
                assert await _jobs(api, qname) == 4
        finally:
            await build_app(redis_server.url, qname).queue(qname).obliterate(force=True)
            await app.close()


async def test_a_flow_takes_a_root_job_id_or_an_idempotency_key_not_both(redis_url: str, qname: str) -> None:
    app = build_app(redis_url, qname)
    try:
        async with live_api(app, api_settings(redis_url)) as api:
            tree = {**_tree(qname, "x"), "options": {"job_id": "root-1"}}
            r = await api.http.post("/api/flows", json=tree, headers={**api.auth("client"), "Idempotency-Key": "k1"})
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_flow", r.text
            bad = await api.http.post("/api/flows", json=_tree(qname, "x"),
                                      headers={**api.auth("client"), "Idempotency-Key": "not a key"})
            assert bad.status_code == 422, bad.text
            assert await _jobs(api, qname) == 0
    finally:
        await app.queue(qname).obliterate(force=True)
        await app.close()
